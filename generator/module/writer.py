"""Write a rendered module into a build directory, safely.

- every file is written to a temporary sibling and renamed into place, and
  all of them are staged before the first rename, so a failure leaves the old
  module intact;
- unchanged files are not rewritten (mtimes stay, `make`-style tools stay quiet);
- a file the spec no longer produces is removed, but only if the previous
  generate wrote it (the manifest says so): terraform state, `.terraform/`,
  the lock file and anything else in the directory are never touched.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from generator.base.errors import UserError

MANIFEST = ".kafkanet/generated.json"


@dataclass
class WriteResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _read_manifest(out_dir: Path) -> list[str]:
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
        return [p for p in data.get("files", []) if isinstance(p, str)]
    except (OSError, ValueError):
        return []


def _safe_relative(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts


def write_module(files: dict[str, str], out_dir: Path) -> WriteResult:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory; pass another --out")
    for rel in files:
        if not _safe_relative(rel):
            raise ValueError(f"refusing to write outside the build directory: {rel}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the build directory: {exc.strerror}") from None

    result = WriteResult()
    staged: list[tuple[str, Path]] = []
    try:
        for rel, text in sorted(files.items()):
            target = out_dir / rel
            data = text.encode("utf-8")
            if target.is_file() and target.read_bytes() == data:
                result.unchanged.append(rel)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            staged.append((rel, Path(tmp)))
    except OSError as exc:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
        raise UserError(f"{out_dir}: cannot write the module: {exc}") from None

    for rel, tmp in staged:
        os.replace(tmp, out_dir / rel)
        result.written.append(rel)

    for rel in _read_manifest(out_dir):
        if rel in files or not _safe_relative(rel):
            continue
        stale = out_dir / rel
        if stale.is_file():
            stale.unlink()
            result.removed.append(rel)
            parent = stale.parent
            while parent != out_dir and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    manifest = out_dir / MANIFEST
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": sorted(files)}, indent=2) + "\n")
    os.replace(tmp, manifest)
    return result
