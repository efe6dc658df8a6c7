"""Run ids: an e2e run's own name, build directory, state key and default_tags; `apply` never has one."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from generator.base.errors import UserError
from generator.environment.session import for_run, open_env
from generator.module.generate import generate
from generator.module.runstamp import RUN_ID_RE, RunStamp, new_run_id, parse_time
from tests.conftest import ROOT, SEED, SPECS, require


def test_the_default_run_id_is_short_random_and_valid():
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) == 20 and all(RUN_ID_RE.match(i) and len(i) == 6 for i in ids)


def test_a_run_has_its_own_name_and_build_directory(_build_root):
    env = for_run(open_env(str(SEED), "local"), "a1b2c3")
    assert env.name == "ttareungyi-a1b2c3"
    assert env.build_dir == _build_root / "ttareungyi-a1b2c3"
    assert env.loaded.topology.name == "ttareungyi-a1b2c3"


@pytest.mark.parametrize(("run_id", "problem"), [
    ("A1", "use 1-8 lowercase letters or digits"),
    ("a_b", "use 1-8 lowercase letters or digits"),  # '_' would split the plane's kn_<env>_<host> names
    ("abcdefghi", "use 1-8 lowercase letters or digits"),
])
def test_bad_run_ids_are_user_errors(run_id, problem):
    with pytest.raises(UserError, match=problem):
        for_run(open_env(str(SEED), "local"), run_id)


def test_a_run_id_that_makes_the_name_too_long_says_what_fits(write_spec):
    spec = write_spec(SEED.read_text().replace("name: ttareungyi", "name: a-long-team-name-xy"))
    with pytest.raises(UserError, match=r"'a-long-team-name-xy-abcdef' is 26 characters, over the 21 .* "
                                        r"a spec name of at most 14"):
        for_run(open_env(str(spec), "local"), "abcdef")


def test_e2e_cli_rejects_a_bad_run_id_with_exit_2(capsys):
    from generator.cli import main

    assert main(["e2e", str(SEED), "--run-id", "Bad"]) == 2
    assert "--run-id 'Bad': use 1-8 lowercase letters or digits" in capsys.readouterr().err


def _stamped(spec, tmp_path, run_id="r0a1b2"):
    env = open_env(str(spec), "local")
    stamp = RunStamp.starting_now(run_id, timedelta(hours=4))
    env = for_run(env, run_id, stamp)
    return stamp, generate(env.loaded, tmp_path / env.name)


def test_the_provider_stamps_run_id_created_and_expires_on_everything(tmp_path):
    stamp, gen = _stamped(SEED, tmp_path)
    providers = gen.files["providers.tf"]
    tags = stamp.tags()
    assert "  default_tags {\n    tags = {\n" in providers
    for key, value in tags.items():
        assert f'"{key}"' in providers and f'"{value}"' in providers
    created, expires = parse_time(tags["kafkanet:created-at"]), parse_time(tags["kafkanet:expires-at"])
    assert expires - created == timedelta(hours=4)
    assert 'name     = "ttareungyi-r0a1b2"' in gen.files["locals.tf"]


def test_a_team_environment_has_no_run_tags(tmp_path):
    gen = generate(SEED, tmp_path / "team")
    assert "default_tags" not in gen.files["providers.tf"]
    assert "kafkanet:run-id" not in "".join(gen.files.values())


def test_each_run_gets_its_own_s3_state_key(tmp_path, write_spec):
    _, gen = _stamped(SPECS / "team-state.yaml", tmp_path)
    assert 'key          = "kafkanet/team-state-r0a1b2/terraform.tfstate"' in gen.files["terraform.tf"]
    team = generate(SPECS / "team-state.yaml", tmp_path / "team").files["terraform.tf"]
    assert 'key          = "kafkanet/team-state/terraform.tfstate"' in team
    keyed = write_spec((SPECS / "team-state.yaml").read_text().replace(
        "  lockfile: true", "  lockfile: true\n  key: teams/kafka/terraform.tfstate"))
    _, gen = _stamped(keyed, tmp_path / "keyed")
    assert 'key          = "teams/kafka/runs/r0a1b2/terraform.tfstate"' in gen.files["terraform.tf"]


def test_the_stamped_module_passes_every_static_check(tmp_path):
    """terraform fmt and validate, checkov and the rest: `kafkanet check` is clean on it."""
    require("terraform")
    _, gen = _stamped(SEED, tmp_path)
    result = subprocess.run([sys.executable, "-m", "generator.cli", "check", str(gen.out_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
