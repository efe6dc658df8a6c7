"""What the lifecycle refuses, before it touches anything."""

from __future__ import annotations

import pytest

from generator.base.errors import UserError
from generator.cli import main
from generator.environment import session
from generator.localaws import moto_server
from tests.conftest import SEED

NO_AWS = {
    "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None, "AWS_DEFAULT_PROFILE": None, "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None, "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
    "AWS_CONFIG_FILE": "/nonexistent/kafkanet-test", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/kafkanet-test",
    # never ask the instance metadata service (a non-loopback address) from a test
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def no_aws_credentials(monkeypatch):
    for key, value in NO_AWS.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


@pytest.mark.parametrize("command", ["apply", "plan", "destroy"])
def test_aws_target_without_credentials_is_a_clear_exit_2(command, no_aws_credentials, capsys, _build_root):
    assert main([command, str(SEED), "--target", "aws"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no AWS credentials found" in err[0] and "--target local" in err[0]
    assert not (_build_root / "ttareungyi").exists(), "nothing may be written before the check"


def test_local_target_needs_root(monkeypatch, capsys, _build_root):
    monkeypatch.setattr(session.os, "geteuid", lambda: 1000)
    assert main(["apply", str(SEED)]) == 2
    assert "needs root" in capsys.readouterr().err
    assert not (_build_root / "ttareungyi").exists()


def test_apply_no_generate_on_an_empty_build_dir(monkeypatch, capsys):
    monkeypatch.setattr(session.os, "geteuid", lambda: 0)
    assert main(["apply", str(SEED), "--no-generate"]) == 2
    assert "has no Terraform files" in capsys.readouterr().err


def test_inventory_before_apply_says_to_apply(capsys):
    assert main(["inventory", str(SEED)]) == 2
    assert "run `kafkanet apply SPEC` first" in capsys.readouterr().err


def test_no_terminal_to_confirm_on_asks_for_yes(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UserError, match="pass --yes"):
        session.confirm("Apply?")


@pytest.mark.terraform
def test_apply_runs_the_module_check_first_and_stops_on_a_finding(capsys, _build_root):
    """A hand-edited module that `kafkanet check` faults is not applied: exit 2, the finding, nothing
    created and nothing left running. (A first local apply checks beside moto's start, init and plan,
    none of which creates anything; it waits for the check before the apply.)"""
    assert main(["generate", str(SEED)]) == 0
    module = _build_root / "ttareungyi"
    network = module / "network.tf"
    network.write_text(network.read_text().replace("resource ", "resource  ", 1))  # unformatted
    capsys.readouterr()
    assert main(["apply", str(SEED), "--no-generate"]) == 2
    err = capsys.readouterr().err
    assert "network.tf" in err and "terraform fmt" in err and "--no-check" in err, err
    assert str(module / "network.tf") in err, "the finding names the module's file, not the snapshot checked"
    assert "terraform apply" not in err, "nothing may be applied before the check passed"
    assert moto_server.find_running(module / session.MOTO_DIR) is None, "the moto server started beside the check stays"
    assert not (module / "terraform.tfstate").exists()
    assert session.recorded_target(session.open_env(str(SEED), "local", module)) is None
