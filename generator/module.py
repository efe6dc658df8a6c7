"""Generate: spec → topology → rendered files → build directory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from generator.keys import ensure_key
from generator.render import RenderContext, render
from generator.spec import PROJECT_ROOT, Spec, load_spec, public_key_text, resolve_spec_path
from generator.topology import Topology
from generator.writer import WriteResult, write_module


def build_root() -> Path:
    return Path(os.environ.get("KAFKANET_BUILD_ROOT", "build"))


def default_build_dir(name: str) -> Path:
    return build_root() / name


def spec_label(path: Path) -> str:
    """How generated headers name the spec: relative to the project when inside it."""
    resolved = path.resolve()
    for base in (PROJECT_ROOT, Path.cwd()):
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return path.name


@dataclass
class Loaded:
    path: Path
    spec: Spec
    topology: Topology


def load(spec_arg: str | Path) -> Loaded:
    path = resolve_spec_path(spec_arg)
    spec = load_spec(path)
    return Loaded(path=path, spec=spec, topology=Topology.from_spec(spec))


@dataclass
class Generated:
    loaded: Loaded
    out_dir: Path
    files: dict[str, str]
    write: WriteResult
    private_key: Path | None
    seconds: float


def _context(loaded: Loaded, public_key: str) -> RenderContext:
    return RenderContext(spec_label=spec_label(loaded.path), public_key=public_key)


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
            from generator.errors import UserError

            raise UserError(f"{out}: exists and is not a directory; pass another --out")
        private_key, given = ensure_key(out, comment=f"kafkanet-{loaded.spec.name}")
    elif loaded.spec.ssh.private_key_file:
        private_key = (loaded.path.parent / Path(loaded.spec.ssh.private_key_file).expanduser()).resolve()
    from generator.readme import module_docs  # it imports this module

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
