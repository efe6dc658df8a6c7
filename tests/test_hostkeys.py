"""AWS host keys pinned from the instances' console output (cloud-init's host-key block)."""

from __future__ import annotations

import paramiko
import pytest

from generator.base.errors import InfraError
from generator.environment import apply, hostkeys, session
from tests.conftest import SEED


def _key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def _console(*keys: paramiko.PKey, noise: str = "") -> str:
    """What EC2 returns for an Amazon Linux instance after cloud-init's first boot."""
    block = "\n".join(f"{k.get_name()} {k.get_base64()} root@ip-10-0-1-10.ap-northeast-2.compute.internal" for k in keys)
    return (
        "[    0.000000] Linux version 6.1.0 ...\n"
        "ec2: #############################################################\n"
        "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        "ec2: 256 SHA256:xxxx root@ip-10-0-1-10 (ECDSA)\n"
        "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
        f"{noise}"
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        f"{block}\n"
        "-----END SSH HOST KEY KEYS-----\n"
        "[   42.000000] cloud-init[1234]: Cloud-init v. 22.2.2 finished\n"
    )


class FakeEC2:
    """get_console_output answers from a script: instance id -> successive outputs."""

    def __init__(self, outputs: dict[str, list[str]]) -> None:
        self.outputs = outputs
        self.calls: list[str] = []

    def get_console_output(self, InstanceId: str, **_: object) -> dict:  # noqa: N803 - boto3's spelling
        self.calls.append(InstanceId)
        script = self.outputs[InstanceId]
        return {"InstanceId": InstanceId, "Output": script.pop(0) if len(script) > 1 else script[0]}


def test_keys_are_read_from_the_console_block_only():
    ecdsa = _key()
    text = _console(ecdsa, noise="ssh-rsa AAAAnot-in-the-block root@x\n")
    assert hostkeys.host_keys(text) == [f"{ecdsa.get_name()} {ecdsa.get_base64()}"]
    assert hostkeys.host_keys("booting...\n-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAA") == []
    assert hostkeys.host_keys("no block at all") == []


def test_known_hosts_lets_paramiko_verify_each_host_by_the_address_ssh_uses(tmp_path):
    bastion_key, broker_key = _key(), _key()
    ec2 = FakeEC2({"i-nat": [_console(bastion_key)], "i-b1": [_console(broker_key)]})
    hosts = [hostkeys.Host("bastion", "i-nat", ("203.0.113.10",)), hostkeys.Host("broker-1", "i-b1", ("10.0.1.10",))]
    path = tmp_path / "known_hosts"
    path.write_text(hostkeys.known_hosts(ec2, hosts))
    known = paramiko.HostKeys(str(path))
    assert known.check("203.0.113.10", bastion_key) and not known.check("203.0.113.10", broker_key)
    assert known.check("10.0.1.10", broker_key) and not known.check("10.0.1.10", bastion_key)


def test_it_waits_for_an_instance_whose_console_is_not_ready(tmp_path):
    key, slept, said = _key(), [], []
    ec2 = FakeEC2({"i-b2": ["[    0.0] booting\n", "[    0.0] booting\n", _console(key)]})
    text = hostkeys.known_hosts(ec2, [hostkeys.Host("broker-2", "i-b2", ("10.0.2.10",))],
                                interval=7, sleep=slept.append, say=said.append)
    assert text == f"10.0.2.10 {key.get_name()} {key.get_base64()} i-b2\n"
    assert slept == [7, 7] and len(ec2.calls) == 3
    assert said[0] == "waiting for the SSH host keys in the console output of 1 instance(s)"


def test_an_instance_that_never_shows_its_keys_is_named_in_the_error():
    ec2 = FakeEC2({"i-nat": [_console(_key())], "i-b2": ["[    0.0] booting\n"]})
    hosts = [hostkeys.Host("bastion", "i-nat", ("203.0.113.10",)), hostkeys.Host("broker-2", "i-b2", ("10.0.2.10",))]
    with pytest.raises(InfraError, match=r"no SSH host keys in the console output of broker-2 \(i-b2\) after 0 s"):
        hostkeys.known_hosts(ec2, hosts, budget=0, interval=1, sleep=lambda _s: None)


def test_pinned_keys_of_the_same_instance_are_kept_and_a_replaced_one_is_read_again():
    old_nat, new_broker = _key(), _key()
    previous = (
        f"203.0.113.10 {old_nat.get_name()} {old_nat.get_base64()} i-nat\n"
        f"10.0.1.10 {_key().get_name()} {_key().get_base64()} i-old-broker\n"
    )
    ec2 = FakeEC2({"i-new-broker": [_console(new_broker)]})  # asking about i-nat would raise KeyError
    hosts = [hostkeys.Host("bastion", "i-nat", ("203.0.113.10",)), hostkeys.Host("broker-1", "i-new-broker", ("10.0.1.10",))]
    text = hostkeys.known_hosts(ec2, hosts, previous=previous)
    assert text == (
        f"203.0.113.10 {old_nat.get_name()} {old_nat.get_base64()} i-nat\n"
        f"10.0.1.10 {new_broker.get_name()} {new_broker.get_base64()} i-new-broker\n"
    )
    assert ec2.calls == ["i-new-broker"]


def test_aws_apply_pins_the_bastion_by_its_elastic_ip_and_brokers_by_private_ip(tmp_path, monkeypatch):
    keys = {i: _key() for i in ("i-nat", "i-b1")}
    ec2 = FakeEC2({i: [_console(k)] for i, k in keys.items()})
    monkeypatch.setattr(apply, "ec2_client", lambda env, moto: ec2)
    env = session.open_env(str(SEED), "aws", tmp_path / "build")
    document = {
        "bastion": {"instance_id": "i-nat", "public_ip": "198.51.100.7"},
        "brokers": [{"name": "broker-1", "instance_id": "i-b1", "private_ip": "10.0.1.10"}],
    }
    text = apply._pin_aws_host_keys(env, document)
    assert text.splitlines() == [
        f"198.51.100.7 {keys['i-nat'].get_name()} {keys['i-nat'].get_base64()} i-nat",
        f"10.0.1.10 {keys['i-b1'].get_name()} {keys['i-b1'].get_base64()} i-b1",
    ]
