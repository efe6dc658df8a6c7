"""generator.base.files.write_atomic: the new content or the old, never half, never a stray temp file."""

from __future__ import annotations

import stat

import pytest

from generator.base.files import write_atomic


def test_writes_text_or_bytes_with_the_mode_asked_for(tmp_path):
    write_atomic(tmp_path / "sub" / "known_hosts", "10.0.1.10 ssh-ed25519 AAAA\n", mode=0o600)
    write_atomic(tmp_path / "image.png", b"\x89PNG")
    assert (tmp_path / "sub" / "known_hosts").read_text() == "10.0.1.10 ssh-ed25519 AAAA\n"
    assert stat.S_IMODE((tmp_path / "sub" / "known_hosts").stat().st_mode) == 0o600
    assert (tmp_path / "image.png").read_bytes() == b"\x89PNG"
    assert stat.S_IMODE((tmp_path / "image.png").stat().st_mode) == 0o644


def test_a_failed_rename_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "inventory.json"
    target.mkdir()  # os.replace of a file onto a directory fails
    (target / "keep").write_text("old")
    with pytest.raises(IsADirectoryError):
        write_atomic(target, "{}")
    assert (target / "keep").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]
