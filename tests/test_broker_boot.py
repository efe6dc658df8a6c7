"""The brokers' boot functions, run for real from the rendered user data.

The setup script sources its functions from /usr/local/lib/kafkanet/broker-lib.sh
(written by the same user data); these tests source that file as rendered and
run one function at a time against stand-ins: a table of disks behind fake
lsblk/findmnt, a file as the disk (real blkid), a local IMDSv2, an HTTPS stand-in
for the Apache sites reached with the real curl inside a throw-away network
namespace. Nothing here writes outside its temporary directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.bootkit import cloud_configs, install, scratch_netns, stub, written
from tests.conftest import SEED, SPECS

# Where the user data puts them on the instance (written out: these tests pin the contract).
BROKER_LIB_PATH = "/usr/local/lib/kafkanet/broker-lib.sh"
TOPICS_SCRIPT_PATH = "/usr/local/sbin/kafkanet-create-topics"
KAFKA_CONFIG_PATH = "/etc/kafka/server.properties"
MIRROR = "https://mirror.kafkanet.test/apache"  # .test: a reserved name, never resolved (see curlrc)


@pytest.fixture(scope="module")
def seed_broker() -> dict:
    return cloud_configs()["broker-1"]


@pytest.fixture
def lib(seed_broker, tmp_path) -> Path:
    return install(written(seed_broker, BROKER_LIB_PATH), tmp_path)


def run_lib(lib: Path, snippet: str, *, path_prefix: Path | None = None, env: dict | None = None,
            netns: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run snippet in bash after sourcing lib, with errexit as the setup script has it."""
    script = lib.parent / "snippet.sh"
    script.write_text(f"set -euo pipefail\n. {lib}\n{snippet}\n")
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    argv = ["bash", str(script)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(
        argv, env={"PATH": f"{path_prefix}:{path}" if path_prefix else path, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --- the data volume: which disk (finding 10c) -----------------------------------------

FAKE_LSBLK = """
import json, os, sys
table = json.loads(os.environ["FAKE_DISKS"])
disks = {d["name"]: d for d in table["disks"]}
args = sys.argv[1:]
if args[:2] == ["-dnpo", "NAME,TYPE"] and len(args) == 2:
    for name in disks:
        print(name, "disk")
elif args[:1] == ["-dno"] and args[1] in ("MODEL", "SERIAL") and args[2] in disks:
    print(disks[args[2]].get(args[1].lower(), ""))
elif args[:2] == ["-no", "PKNAME"]:
    print(next((n[5:] for n, d in disks.items() if args[2] in d.get("parts", [])), ""))
elif args[:2] == ["-dnpo", "NAME"]:
    found = table.get("links", {}).get(args[2], args[2])
    if found not in disks:
        sys.exit(f"lsblk: {args[2]}: not a block device")
    print(found)
else:
    sys.exit(f"fake lsblk: unexpected arguments {args}")
"""

EBS = "Amazon Elastic Block Store"
VOLUME = "vol-0123456789abcdef0"
NVME_ROOT = {"name": "/dev/nvme0n1", "model": EBS, "serial": "vol0aaaaaaaaaaaaaaaa0", "parts": ["/dev/nvme0n1p1"]}

# (id, disks in lsblk's order, /dev links, the volume id passed, the disk expected or None for "not yet")
DISK_CASES = [
    ("by-volume-id-not-the-first-disk",
     [NVME_ROOT, {"name": "/dev/nvme1n1", "model": EBS, "serial": "vol0bbbbbbbbbbbbbbbb0"},
      {"name": "/dev/nvme2n1", "model": EBS, "serial": "vol0123456789abcdef0"}], {}, VOLUME, "/dev/nvme2n1"),
    ("volume-id-not-attached-yet-takes-no-other-disk",
     [NVME_ROOT, {"name": "/dev/nvme1n1", "model": EBS, "serial": "vol0bbbbbbbbbbbbbbbb0"}], {}, VOLUME, None),
    ("zram-sorted-first-is-not-a-data-volume",
     [{"name": "/dev/zram0"}, NVME_ROOT, {"name": "/dev/nvme1n1", "model": EBS, "serial": "vol0bbbbbbbbbbbbbbbb0"}],
     {}, "", "/dev/nvme1n1"),
    ("instance-store-is-not-a-data-volume",
     [NVME_ROOT, {"name": "/dev/nvme1n1", "model": "Amazon EC2 NVMe Instance Storage", "serial": "AWS1A2B"},
      {"name": "/dev/nvme2n1", "model": EBS, "serial": "vol0bbbbbbbbbbbbbbbb0"}], {}, "", "/dev/nvme2n1"),
    ("udev-link-of-the-attachment-name",
     [NVME_ROOT, {"name": "/dev/nvme1n1", "model": EBS, "serial": "vol0bbbbbbbbbbbbbbbb0"},
      {"name": "/dev/nvme2n1", "model": EBS, "serial": "vol0cccccccccccccccc0"}],
     {"/dev/sdf": "/dev/nvme2n1"}, "", "/dev/nvme2n1"),
    ("two-ebs-disks-and-no-way-to-tell",
     [NVME_ROOT, {"name": "/dev/nvme1n1", "model": EBS, "serial": "vol0bbbbbbbbbbbbbbbb0"},
      {"name": "/dev/nvme2n1", "model": EBS, "serial": "vol0cccccccccccccccc0"}], {}, "", None),
    ("xen-t2-xvdf-even-with-a-volume-id",
     [{"name": "/dev/xvda", "parts": ["/dev/xvda1"]}, {"name": "/dev/xvdf"}], {}, VOLUME, "/dev/xvdf"),
    ("xen-t2-not-attached-yet",
     [{"name": "/dev/xvda", "parts": ["/dev/xvda1"]}], {}, "", None),
]  # fmt: skip


@pytest.mark.parametrize("disks,links,volume_id,expected", [c[1:] for c in DISK_CASES], ids=[c[0] for c in DISK_CASES])
def test_data_volume_is_chosen_by_its_ebs_identity(lib, tmp_path, disks, links, volume_id, expected):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lsblk").write_text(f"#!{sys.executable}\n{FAKE_LSBLK}")
    (bin_dir / "lsblk").chmod(0o755)
    root_part = next(p for d in disks for p in d.get("parts", []))
    stub(bin_dir, "findmnt", f'[[ "$*" == "-no SOURCE /" ]] && echo {root_part}')
    table = json.dumps({"disks": disks, "links": links})
    result = run_lib(lib, f'data_device "{volume_id}" /dev/sdf', path_prefix=bin_dir, env={"FAKE_DISKS": table})
    if expected is None:
        assert result.returncode != 0 and not result.stdout, f"chose {result.stdout!r}"
        assert "no data volume yet" in result.stderr or "no NVMe disk with serial" in result.stderr, result.stderr
    else:
        assert (result.returncode, result.stdout) == (0, f"{expected}\n"), result.stderr


# --- the data volume: format and fstab (findings 9, 10b) ----------------------------------


def _disk_tools(tmp_path: Path, mkfs_body: str) -> Path:
    """mkfs.xfs as a stand-in (this machine has no xfsprogs), counting its calls; blkid is the real one."""
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "mkfs.xfs", f'echo "$*" >>{tmp_path}/mkfs.calls\n{mkfs_body}')
    return bin_dir


def _uuid(device: Path) -> str:
    return subprocess.run(
        ["blkid", "-p", "-s", "UUID", "-o", "value", str(device)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_blank_volume_is_formatted_once_and_mounted_by_its_uuid(lib, tmp_path):
    if shutil.which("mkfs.ext4", path="/usr/sbin:/sbin") is None:
        pytest.fail("mkfs.ext4 (e2fsprogs) is not installed")
    device = tmp_path / "disk.img"
    with device.open("wb") as f:
        f.truncate(64 << 20)
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=1234 / xfs defaults 0 0\n")
    bin_dir = _disk_tools(tmp_path, 'exec mkfs.ext4 -q -F "${@: -1}"')  # a real filesystem with a real UUID
    steps = f"format_data_volume {device}\nensure_fstab {device} /var/lib/kafka {fstab}"
    first = run_lib(lib, steps, path_prefix=bin_dir)
    assert first.returncode == 0, first.stderr
    uuid = _uuid(device)
    second = run_lib(lib, steps, path_prefix=bin_dir)  # the next boot
    assert second.returncode == 0, second.stderr
    assert _uuid(device) == uuid, "formatted again: the data is gone"
    assert len((tmp_path / "mkfs.calls").read_text().splitlines()) == 1
    assert fstab.read_text() == f"UUID=1234 / xfs defaults 0 0\nUUID={uuid} /var/lib/kafka xfs defaults,nofail 0 2\n"


def test_no_uuid_after_mkfs_is_an_error_not_an_empty_fstab_entry(lib, tmp_path):
    """The udev race: mkfs returned, the probe shows no filesystem yet. `UUID= /var/lib/kafka`
    in fstab would make every later mount fail; the step must fail (and be retried) instead."""
    device = tmp_path / "disk.img"
    with device.open("wb") as f:
        f.truncate(16 << 20)
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    bin_dir = _disk_tools(tmp_path, "exit 0")
    result = run_lib(lib, f"format_data_volume {device}\nensure_fstab {device} /var/lib/kafka {fstab}",
                     path_prefix=bin_dir)  # fmt: skip
    assert result.returncode != 0
    assert fstab.read_text() == ""
    assert "shows no filesystem UUID" in result.stderr, result.stderr


# --- broker.rack from IMDSv2 (finding 8) ------------------------------------------------


class _Imds:
    """IMDSv2 on 127.0.0.1: a token from PUT /latest/api/token (TTL header required), then
    metadata only with that token. The first `busy` token requests get 503."""

    def __init__(self, az_id: str, busy: int = 0):
        self.requests: list[tuple[str, str, dict]] = []
        self.token = "AQAEAKafkanetTestToken=="
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: str) -> None:
                imds.requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def do_PUT(self) -> None:  # noqa: N802
                nonlocal busy
                if self.path != "/latest/api/token":
                    return self._send(403, "")
                if busy > 0:
                    busy -= 1
                    return self._send(503, "")
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self._send(400, "")
                self._send(200, imds.token)

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("X-aws-ec2-metadata-token") != imds.token:
                    return self._send(401, "")  # http_tokens = "required"
                if self.path == "/latest/meta-data/placement/availability-zone-id":
                    return self._send(200, az_id)
                self._send(404, "")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def config(seed_broker, tmp_path) -> Path:
    path = tmp_path / "server.properties"
    path.write_text(written(seed_broker, KAFKA_CONFIG_PATH)["content"])
    return path


def _props(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_broker_rack_is_the_az_id_from_imdsv2(lib, config):
    imds = _Imds("apne2-az3", busy=1)
    try:
        result = run_lib(lib, f"set_broker_rack {config} {imds.url}")
    finally:
        imds.close()
    assert result.returncode == 0, result.stderr
    assert [v for k, v in _props(config) if k == "broker.rack"] == ["apne2-az3"]
    methods = [(m, p) for m, p, _ in imds.requests]
    assert methods == [("PUT", "/latest/api/token")] * 2 + [("GET", "/latest/meta-data/placement/availability-zone-id")]
    # the next boot: already set, no metadata needed (nothing listens there any more)
    again = run_lib(lib, f"set_broker_rack {config} {imds.url}")
    assert again.returncode == 0, again.stderr
    assert [v for k, v in _props(config) if k == "broker.rack"] == ["apne2-az3"]


def test_no_metadata_fails_within_bounds_and_leaves_the_config(lib, config):
    imds = _Imds("apne2-az3")
    imds.close()  # nothing listens: the port of a server that is gone
    before = config.read_text()
    started = time.monotonic()
    result = run_lib(lib, f"set_broker_rack {config} {imds.url}")
    assert result.returncode != 0
    assert time.monotonic() - started < 45
    assert config.read_text() == before
    assert "no IMDSv2 token" in result.stderr, result.stderr


# --- the heap (finding 2) ---------------------------------------------------------------


@pytest.mark.parametrize("mem_kb,line", [
    (1939800, 'KAFKA_HEAP_OPTS="-Xms947m -Xmx947m"'),  # t3.small: half of 1894 MiB
    (65022216, 'KAFKA_HEAP_OPTS="-Xms6144m -Xmx6144m"'),  # larger: at most 6 GiB, the rest is page cache
])  # fmt: skip
def test_heap_environment_file(lib, tmp_path, mem_kb, line):
    """Written for kafka.service's EnvironmentFile=; systemd.exec(5): a double-quoted value keeps its space."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_kb} kB\nMemFree:          512000 kB\n")
    target = tmp_path / "etc" / "kafkanet" / "kafka.env"
    result = run_lib(lib, f"write_heap_env {target} {meminfo}")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == line + "\n"


# --- the Kafka download (findings 4, 19) ------------------------------------------------


def _release(tmp_path: Path) -> dict[str, str]:
    """A small kafka_2.13-3.9.1.tgz and its .sha512 as Apache writes it (gpg --print-md)."""
    if shutil.which("gpg") is None:
        pytest.fail("gpg is not installed")
    top = tmp_path / "release" / "kafka_2.13-3.9.1"
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "kafka-server-start.sh").write_text("#!/bin/sh\necho kafka\n")
    (top / "bin" / "kafka-server-start.sh").chmod(0o755)
    tarball = tmp_path / "release" / "kafka_2.13-3.9.1.tgz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(top.parent), top.name], check=True)
    digest = subprocess.run(["gpg", "--print-md", "sha512", tarball.name], cwd=tarball.parent,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    sums = tarball.with_name(tarball.name + ".sha512")
    sums.write_text(digest)
    return {tarball.name: str(tarball), sums.name: str(sums)}


SITES = {  # host: the path prefix it serves kafka/<version>/ under
    "mirror.kafkanet.test": "/apache/kafka/3.9.1",
    "dlcdn.apache.org": "/kafka/3.9.1",
    "downloads.apache.org": "/kafka/3.9.1",
    "archive.apache.org": "/dist/kafka/3.9.1",
}


@pytest.fixture
def mirror_lib(tmp_path, write_spec) -> Path:
    spec = SEED.read_text()
    spec = spec.replace("  version: 3.9.1\n", f"  version: 3.9.1\n  mirror_url: {MIRROR}/\n")
    cloud = cloud_configs(write_spec(spec, "mirrored.yaml"))["broker-1"]
    return install(written(cloud, BROKER_LIB_PATH), tmp_path)


@pytest.fixture
def release_sites(tmp_path) -> Iterator:
    """Run the HTTPS stand-in in a throw-away namespace; yield (netns, curl env, start(modes) -> log)."""
    work = tmp_path / "sites"
    work.mkdir()
    cert, key = work / "cert.pem", work / "key.pem"
    names = ",".join(f"DNS:{h}" for h in SITES)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kafkanet-test",
         "-addext", f"subjectAltName={names}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    # curl reads this instead of any user's .curlrc: every host it is asked for is the stand-in.
    # (quoted: curl takes a leading ":" as a separator and would drop the rule unquoted)
    (work / ".curlrc").write_text(f'connect-to = "::127.0.0.1:8443"\ncacert = "{cert}"\n')
    files = _release(tmp_path)
    procs = []
    with scratch_netns() as ns:
        def start(modes: dict[str, str]) -> Path:
            log = work / "requests.jsonl"
            config = work / "config.json"
            config.write_text(json.dumps({
                "cert": str(cert), "key": str(key), "port": 8443, "log": str(log), "files": files,
                "hosts": {h: {"prefix": prefix, "mode": modes.get(h, "404")} for h, prefix in SITES.items()},
            }))  # fmt: skip
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).with_name("fake_release_server.py")),
                 str(config)], stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout.readline().strip() == "ready"
            return log

        try:
            yield ns, {"CURL_HOME": str(work), "HOME": str(work)}, start
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def _fetched(log: Path) -> list[tuple[str, int]]:
    """(host, status) of every tarball request, in order."""
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(r["host"], r["status"]) for r in rows if r["path"].endswith(".tgz")]


def _install(lib: Path, tmp_path: Path, sites) -> tuple[subprocess.CompletedProcess, Path, Path]:
    ns, env, _ = sites
    dest, work = tmp_path / "opt" / "kafka", tmp_path / "var" / "cache" / "kafkanet"
    result = run_lib(lib, f"install_kafka {dest} {work}", env=env, netns=ns, timeout=120)
    return result, dest, work


@pytest.mark.root
def test_kafka_comes_from_the_mirror_first(mirror_lib, tmp_path, release_sites):
    log = release_sites[2]({"mirror.kafkanet.test": "ok", "dlcdn.apache.org": "ok"})
    result, dest, work = _install(mirror_lib, tmp_path, release_sites)
    assert result.returncode == 0, result.stderr
    assert _fetched(log) == [("mirror.kafkanet.test", 200)]
    assert (dest / "bin" / "kafka-server-start.sh").read_text() == "#!/bin/sh\necho kafka\n"
    assert list(work.iterdir()) == [], "the tarball was left behind"


@pytest.mark.root
def test_kafka_falls_back_cdn_then_downloads_then_archive(mirror_lib, tmp_path, release_sites):
    log = release_sites[2]({"archive.apache.org": "ok"})
    result, dest, work = _install(mirror_lib, tmp_path, release_sites)
    assert result.returncode == 0, result.stderr
    assert _fetched(log) == [("mirror.kafkanet.test", 404), ("dlcdn.apache.org", 404),
                             ("downloads.apache.org", 404), ("archive.apache.org", 200)]  # fmt: skip
    assert (dest / "bin" / "kafka-server-start.sh").exists()
    assert list(work.iterdir()) == []


@pytest.mark.root
def test_kafka_download_retries_a_transient_error(lib, tmp_path, release_sites):
    """The seed has no mirror: the CDN answers 503 twice (curl retries), downloads.apache.org would do too."""
    log = release_sites[2]({"dlcdn.apache.org": "503x2", "downloads.apache.org": "ok"})
    result, dest, _ = _install(lib, tmp_path, release_sites)
    assert result.returncode == 0, result.stderr
    assert _fetched(log) == [("dlcdn.apache.org", 503), ("dlcdn.apache.org", 503), ("dlcdn.apache.org", 200)]
    assert (dest / "bin" / "kafka-server-start.sh").exists()


@pytest.mark.root
def test_kafka_checksum_mismatch_installs_nothing(lib, tmp_path, release_sites):
    log = release_sites[2]({h: "bad-sum" for h in SITES})
    result, dest, work = _install(lib, tmp_path, release_sites)
    assert result.returncode != 0
    assert [h for h, _ in _fetched(log)] == ["dlcdn.apache.org", "downloads.apache.org", "archive.apache.org"]
    assert "SHA-512 mismatch" in result.stderr, result.stderr
    assert not dest.exists() and not dest.with_name("kafka.partial").exists()
    assert list(work.iterdir()) == []


# --- topic creation (finding 11) ---------------------------------------------------------


@pytest.mark.root
def test_topics_script_retries_until_the_cluster_takes_them(tmp_path):
    """The real script from virginia-five (two topics), in a private mount namespace where
    /opt and /usr/local/lib are this test's folders: its kafka-topics.sh refuses the first
    call as Kafka does while brokers are missing."""
    cloud = cloud_configs(SPECS / "virginia-five.yaml")["broker-1"]
    opt, local_lib = tmp_path / "opt", tmp_path / "usr-local-lib"
    (local_lib / "kafkanet").mkdir(parents=True)
    (local_lib / "kafkanet" / "broker-lib.sh").write_text(written(cloud, BROKER_LIB_PATH)["content"])
    calls = tmp_path / "calls"
    stub(opt / "kafka" / "bin", "kafka-topics.sh", f"""
        echo "$*" >>{calls}
        if (( $(wc -l <{calls}) == 1 )); then
          echo "Error while executing topic command : Replication factor: 3 larger than available brokers: 1." >&2
          exit 1
        fi
        """)  # fmt: skip
    script = install(written(cloud, TOPICS_SCRIPT_PATH), tmp_path)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c",
         'mount --bind "$1" /opt && mount --bind "$2" /usr/local/lib && exec bash "$3"', "_",
         str(opt), str(local_lib), str(script)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    create = "--bootstrap-server 10.20.1.10:19092 --create --if-not-exists --topic"
    assert calls.read_text().splitlines() == [
        f"{create} bike-station-status --partitions 6 --replication-factor 3",
        f"{create} bike-station-status --partitions 6 --replication-factor 3",
        f"{create} bike-station-status.dlq --partitions 1 --replication-factor 3",
    ]
