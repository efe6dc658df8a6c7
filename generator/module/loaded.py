"""A spec read from disk: where SPEC points, the validated model, its topology, its build directory.

The spec model itself is pure (:mod:`generator.spec`); this is where files
are read: the YAML, a public key given as a path, ``environments/`` by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from generator.base.errors import SpecError
from generator.module.runstamp import RunStamp
from generator.spec.model import SSH_KEY_RE, Spec
from generator.spec.topology import Topology
from generator.spec.validate import validate_spec
from generator.spec.yamltext import StrictYamlLoader, yaml_problem

# the source checkout (environments/ beside generator/); in a wheel install only ./environments counts
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS_DIR = PROJECT_ROOT / "environments"


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
    run: RunStamp | None = None  # an e2e run's stamp (generator/module/runstamp.py); None for apply


def load(spec_arg: str | Path) -> Loaded:
    path = resolve_spec_path(spec_arg)
    spec = load_spec(path)
    return Loaded(path=path, spec=spec, topology=Topology.from_spec(spec))


def resolve_spec_path(arg: str | Path) -> Path:
    """SPEC is a path to a YAML file or the name of an environment under environments/."""
    path = Path(arg)
    if path.is_file():
        return path
    if path.suffix not in {".yaml", ".yml"} and "/" not in str(arg):
        for base in (Path.cwd() / "environments", ENVIRONMENTS_DIR):
            candidate = base / f"{arg}.yaml"
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for base in (Path.cwd() / "environments", ENVIRONMENTS_DIR) for p in base.glob("*.yaml")})
    raise SpecError(
        f"{arg}: no such spec file or environment; give a YAML path or one of: {', '.join(known) or '(none)'}"
    )


def load_spec(arg: str | Path) -> Spec:
    """Load, parse and validate a spec; raise SpecError with every problem found."""
    path = resolve_spec_path(arg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from None
    try:
        data = yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {yaml_problem(exc)}") from None
    return validate_spec(data, str(path), more_checks=[lambda spec: _key_problems(spec, path)])


def _key_problems(spec: Spec, spec_path: Path) -> list[str]:
    if spec.ssh.public_key is None:
        return []
    problem = _check_public_key(spec.ssh.public_key, spec_path)
    return [f"ssh.public_key: {problem}"] if problem else []


def _check_public_key(value: str, spec_path: Path) -> str | None:
    if SSH_KEY_RE.match(value.strip()):
        return None
    key_path = (spec_path.parent / Path(value).expanduser()).resolve()
    if not key_path.is_file():
        return f"{value!r} is neither an OpenSSH public key ('ssh-ed25519 AAAA...') nor a readable .pub file"
    if not SSH_KEY_RE.match(key_path.read_text(encoding="utf-8", errors="replace").strip()):
        return f"{key_path} does not hold an OpenSSH public key"
    return None


def public_key_text(spec: Spec, spec_path: Path) -> str | None:
    """The literal public key the spec gives (inline or from a file), or None."""
    value = spec.ssh.public_key
    if value is None:
        return None
    if SSH_KEY_RE.match(value.strip()):
        return value.strip()
    return (spec_path.parent / Path(value).expanduser()).resolve().read_text(encoding="utf-8").strip()
