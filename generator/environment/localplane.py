"""The local target's data plane, seen from the lifecycle: :mod:`localvpc` with kafkanet's errors.

``localvpc`` is a library of its own (it imports nothing of ``generator``);
this is the one place its errors become the CLI's: a plane user error exits
2 with its lines, a missing prerequisite says what to install, anything else
is an infrastructure failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from generator.base.endpoints import is_loopback_url
from generator.base.errors import InfraError, PrerequisiteError, UserError
from localvpc import errors as plane_errors
from localvpc import plane
from localvpc.results import PlaneInfo, TeardownReport


@contextmanager
def kafkanet_errors() -> Iterator[None]:
    """Re-raise the plane's errors as the CLI's family, same lines."""
    try:
        yield
    except plane_errors.PlanePrerequisiteError as exc:
        raise PrerequisiteError(*exc.problems) from exc
    except plane_errors.PlaneUserError as exc:
        raise UserError(*exc.problems) from exc
    except plane_errors.PlaneError as exc:
        raise InfraError(*exc.problems) from exc


def build(env_name: str, ec2: Any, private_key: Path, state_dir: Path, *, endpoint_url: str | None = None) -> PlaneInfo:
    """The plane of ``env_name``, following the API of the moto server ``ec2`` talks to (or ``endpoint_url``)."""
    if endpoint_url is None:
        known = getattr(getattr(ec2, "meta", None), "endpoint_url", None)
        endpoint_url = known if isinstance(known, str) and is_loopback_url(known) else None
    with kafkanet_errors():
        return plane.build(env_name, ec2, private_key, state_dir, endpoint_url=endpoint_url)


def teardown(env_name: str) -> TeardownReport:
    with kafkanet_errors():
        return plane.teardown(env_name)
