"""Run ids on the local target, for real: two e2e runs of one spec at once, and --max-duration.

Both runs keep their environments (--keep prints the id), coexist (own names,
namespaces, moto servers, tags), and `test`, `ssh` and `destroy` reach each by
its --run-id; the destroys leave nothing.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from generator.localaws import moto_server
from tests.conftest import ROOT
from tests.envs import (
    KAFKANET,
    e2e_env,
    e2e_spec,
    machine_leftovers,
    moto_alive,
    needs_root,
)

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]


def _kafkanet(env, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(KAFKANET), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow(seconds=150)
def test_two_e2e_runs_of_one_spec_run_at_once_and_each_is_reached_by_its_run_id(tmp_path, request):
    needs_root()
    name, spec = e2e_spec(tmp_path, "rr")
    env = e2e_env(tmp_path)
    ids = ("ra" + name[-4:], "rb" + name[-4:])
    for run_id in ids:  # teardown registered before anything starts
        request.addfinalizer(lambda r=run_id: _kafkanet(env, "destroy", str(spec), "--run-id", r))
    procs = [subprocess.Popen([str(KAFKANET), "e2e", str(spec), "--run-id", run_id, "--keep", "--",
                               "-k", "test_nat_source_dest_check_off or test_private_default_route_via_nat"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run_id in ids]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for run_id, proc, out in zip(ids, procs, outs):
        assert proc.returncode == 0, out[-3000:]
        assert f"--keep: {name}-{run_id} (run {run_id}) left running; remove it with " \
               f"`kafkanet destroy {spec} --target local --run-id {run_id}`" in out, out[-3000:]
        assert "4 passed" in out, out[-3000:]
    builds = [tmp_path / "build" / f"{name}-{run_id}" for run_id in ids]
    for run_id, build in zip(ids, builds):
        inventory = json.loads((build / ".kafkanet" / "inventory.json").read_text())
        assert inventory["environment"] == f"{name}-{run_id}"
        ec2 = moto_server.ec2_client(inventory["aws_endpoint"], "ap-northeast-2")
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:kafkanet:run-id", "Values": [run_id]}])["Vpcs"]
        assert len(vpcs) == 1
        tags = {t["Key"]: t["Value"] for t in vpcs[0]["Tags"]}
        assert tags["kafkanet:env"] == f"{name}-{run_id}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tags["kafkanet:expires-at"])
        assert tags["kafkanet:created-at"] < tags["kafkanet:expires-at"]
        # the instances carry the stamp too (default_tags reach everything)
        instances = ec2.describe_instances(Filters=[{"Name": "tag:kafkanet:run-id", "Values": [run_id]}])
        assert sum(len(r["Instances"]) for r in instances["Reservations"]) == 4
    assert inventory["aws_endpoint"] != json.loads((builds[0] / ".kafkanet" / "inventory.json").read_text())[
        "aws_endpoint"]  # each run has its own moto
    test = _kafkanet(env, "test", str(spec), "--run-id", ids[0], "--", "-k", "test_nat_source_dest_check_off")
    assert test.returncode == 0 and "1 passed" in test.stdout, (test.stdout + test.stderr)[-3000:]
    ssh = _kafkanet(env, "ssh", str(spec), "broker-2", "--run-id", ids[1], "--", "echo", "hello-$((6*7))")
    assert ssh.returncode == 0 and ssh.stdout == "hello-42\n", ssh.stdout + ssh.stderr
    for run_id in ids:
        done = _kafkanet(env, "destroy", str(spec), "--run-id", run_id)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert machine_leftovers(name) == []
    assert not moto_alive(tmp_path / "build" / name)


def test_max_duration_stops_the_run_tears_down_and_exits_3(tmp_path, request):
    needs_root()
    name, spec = e2e_spec(tmp_path, "md")
    env = e2e_env(tmp_path)
    run_id = "md" + name[-4:]
    # if the e2e itself fails to tear down (its process killed at the timeout), this still does
    request.addfinalizer(lambda: _kafkanet(env, "destroy", str(spec), "--run-id", run_id))
    proc = _kafkanet(env, "e2e", str(spec), "--run-id", run_id, "--max-duration", "25s", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out[-3000:]
    assert "kafkanet: --max-duration 25 s reached: stopped the run, tearing down" in out, out[-3000:]
    assert "kafkanet: error: e2e stopped: --max-duration 25 s reached before the suite finished" in out, out[-3000:]
    assert re.search(r"e2e stopped \(run \w+\):", out) and "moto server stop" in out, out[-3000:]
    assert machine_leftovers(name) == []
    assert not moto_alive(tmp_path / "build" / name)
