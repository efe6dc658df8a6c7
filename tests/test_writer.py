"""The writer: atomic, idempotent, removes only what it generated."""

from __future__ import annotations

import os

import pytest

from generator.base.errors import UserError
from generator.cli import main
from generator.module.writer import write_module
from tests.conftest import SEED


def test_second_write_changes_nothing(tmp_path):
    files = {"a.tf": "x\n", "sub/b.yaml": "y\n"}
    first = write_module(files, tmp_path)
    mtime = os.stat(tmp_path / "a.tf").st_mtime_ns
    second = write_module(files, tmp_path)
    assert sorted(first.written) == ["a.tf", "sub/b.yaml"]
    assert second.written == [] and sorted(second.unchanged) == ["a.tf", "sub/b.yaml"]
    assert os.stat(tmp_path / "a.tf").st_mtime_ns == mtime


def test_stale_generated_files_go_but_state_and_user_files_stay(tmp_path):
    write_module({"a.tf": "x\n", "user-data/broker-5.yaml": "old\n"}, tmp_path)
    keep = {
        "terraform.tfstate": "{}",
        "terraform.tfstate.backup": "{}",
        ".terraform.lock.hcl": "# lock",
        ".terraform/modules/modules.json": "{}",
        "notes.txt": "mine",
    }
    for rel, text in keep.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    result = write_module({"a.tf": "x\n"}, tmp_path)
    assert result.removed == ["user-data/broker-5.yaml"]
    assert not (tmp_path / "user-data").exists()
    for rel, text in keep.items():
        assert (tmp_path / rel).read_text() == text


def test_out_path_that_is_a_file_is_a_user_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(UserError):
        write_module({"a.tf": "x\n"}, target)


def test_no_temporary_files_left(tmp_path):
    write_module({"a.tf": "x\n", "b.tf": "y\n"}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kafkanet", "a.tf", "b.tf"]


def test_generate_cli_reports_and_is_idempotent(tmp_path, capsys):
    out = tmp_path / "mod"
    assert main(["generate", str(SEED), "--out", str(out)]) == 0
    assert "14 written, 0 unchanged" in capsys.readouterr().out
    assert main(["generate", "ttareungyi", "--out", str(out)]) == 0
    assert "0 written, 14 unchanged, 0 removed" in capsys.readouterr().out


def test_generate_defaults_to_build_name(_build_root, capsys):
    assert main(["generate", "ttareungyi"]) == 0
    assert (_build_root / "ttareungyi" / "network.tf").is_file()
