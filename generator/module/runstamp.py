"""An e2e run's stamp: its id and lifetime, carried into the generated module.

``kafkanet e2e --run-id ID`` suffixes the environment's name with the id (so two
runs of one spec never share a name, a build directory or a state key) and
stamps every resource, through the provider's ``default_tags``, with
``kafkanet:run-id``, ``kafkanet:created-at`` and ``kafkanet:expires-at``:
``kafkanet sweep`` deletes only what carries a run id and is past its expiry.
``kafkanet apply`` (a team environment) never carries a stamp.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

RUN_ID_TAG = "kafkanet:run-id"
CREATED_AT_TAG = "kafkanet:created-at"
EXPIRES_AT_TAG = "kafkanet:expires-at"

#: lowercase letters and digits only: the id becomes part of the environment's name,
#: which names AWS resources and the local plane's namespaces (``kn_<env>_*``, no ``_``).
RUN_ID_RE = re.compile(r"^[a-z0-9]{1,8}$")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def new_run_id() -> str:
    """A short random id: 6 hex digits, as terratest's UniqueId is 6 characters."""
    return secrets.token_hex(3)


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime | None:
    """A stamp's time, or None when it is not one (a hand-set tag is no candidate)."""
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RunStamp:
    run_id: str
    created_at: datetime
    expires_at: datetime

    @classmethod
    def starting_now(cls, run_id: str, lifetime: timedelta) -> RunStamp:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        return cls(run_id=run_id, created_at=now, expires_at=now + lifetime)

    def tags(self) -> dict[str, str]:
        return {
            RUN_ID_TAG: self.run_id,
            CREATED_AT_TAG: format_time(self.created_at),
            EXPIRES_AT_TAG: format_time(self.expires_at),
        }
