"""Generate: a loaded spec → rendered files (and the module README) → the build directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from generator.base.errors import UserError
from generator.module.keys import ensure_key
from generator.module.loaded import (
    Loaded,
    default_build_dir,
    load,
    public_key_text,
    spec_label,
)
from generator.module.readme import module_docs
from generator.module.render import RenderContext, render
from generator.module.writer import WriteResult, write_module


@dataclass
class Generated:
    loaded: Loaded
    out_dir: Path
    files: dict[str, str]
    write: WriteResult
    private_key: Path | None
    seconds: float


def _context(loaded: Loaded, public_key: str) -> RenderContext:
    return RenderContext(spec_label=spec_label(loaded.path), public_key=public_key, run=loaded.run)


def render_for(loaded: Loaded, public_key: str) -> dict[str, str]:
    """The Terraform root module and its cloud-init files (no README: see generate)."""
    return render(loaded.topology, _context(loaded, public_key))


def generate(spec_arg: str | Path | Loaded, out_dir: Path | None = None) -> Generated:
    """Write the module of a spec (a path or name, or one already loaded, e.g. with --admin-cidr applied)."""
    start = time.perf_counter()
    loaded = spec_arg if isinstance(spec_arg, Loaded) else load(spec_arg)
    out = out_dir if out_dir is not None else default_build_dir(loaded.spec.name)
    given = public_key_text(loaded.spec, loaded.path)
    private_key: Path | None = None
    if given is None:
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory; pass another --out")
        private_key, given = ensure_key(out, comment=f"kafkanet-{loaded.spec.name}")
    elif loaded.spec.ssh.private_key_file:
        private_key = (loaded.path.parent / Path(loaded.spec.ssh.private_key_file).expanduser()).resolve()
    ctx = _context(loaded, given)
    files = render(loaded.topology, ctx)
    files.update(module_docs(loaded, ctx, out))
    result = write_module(files, out)
    return Generated(
        loaded=loaded,
        out_dir=out,
        files=files,
        write=result,
        private_key=private_key,
        seconds=time.perf_counter() - start,
    )
