"""The brokers' boot functions, run for real from the rendered user data.

The setup script sources its functions from /usr/local/lib/kafkanet/broker-lib.sh
(written by the same user data); these tests source that file as rendered and
run one function at a time against stand-ins. Nothing here writes outside its
temporary directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.bootkit import cloud_configs, install, stub, written
from tests.conftest import SPECS

# Where the user data puts them on the instance (written out: these tests pin the contract).
BROKER_LIB_PATH = "/usr/local/lib/kafkanet/broker-lib.sh"
TOPICS_SCRIPT_PATH = "/usr/local/sbin/kafkanet-create-topics"


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
