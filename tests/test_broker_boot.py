"""The brokers' boot functions, run for real from the rendered user data.

The setup script sources its functions from /usr/local/lib/kafkanet/broker-lib.sh
(written by the same user data); these tests source that file as rendered and
run one function at a time against stand-ins. Nothing here writes outside its
temporary directory.
"""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.bootkit import cloud_configs, install, stub, written
from tests.conftest import SPECS

# Where the user data puts them on the instance (written out: these tests pin the contract).
BROKER_LIB_PATH = "/usr/local/lib/kafkanet/broker-lib.sh"
TOPICS_SCRIPT_PATH = "/usr/local/sbin/kafkanet-create-topics"
KAFKA_CONFIG_PATH = "/etc/kafka/server.properties"


@pytest.fixture(scope="module")
def seed_broker() -> dict:
    return cloud_configs()["broker-1"]


@pytest.fixture
def lib(seed_broker, tmp_path) -> Path:
    return install(written(seed_broker, BROKER_LIB_PATH), tmp_path)


def run_lib(lib: Path, snippet: str, *, path_prefix: Path | None = None, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run snippet in bash after sourcing lib, with errexit as the setup script has it."""
    script = lib.parent / "snippet.sh"
    script.write_text(f"set -euo pipefail\n. {lib}\n{snippet}\n")
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    argv = ["bash", str(script)]
    return subprocess.run(
        argv, env={"PATH": f"{path_prefix}:{path}" if path_prefix else path, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


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
