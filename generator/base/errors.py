"""The project's error family.

User errors (bad spec, bad arguments, a missing prerequisite) are caught by the
CLI in one place, printed one line per problem, and exit 2. Infrastructure
errors (terraform or a check failed) exit 1. Anything else is a bug and is
allowed to crash loudly with a traceback.
"""

from __future__ import annotations


class KafkanetError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 1

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise TypeError("a KafkanetError needs at least one problem line")
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


class UserError(KafkanetError):
    """Something the user can fix: bad input, bad arguments, missing tool."""

    exit_code = 2


class SpecError(UserError):
    """The topology spec is invalid; one problem line per field."""


class PrerequisiteError(UserError):
    """A tool or permission the command needs is missing (terraform, root...)."""


class InfraError(KafkanetError):
    """Terraform, moto or the local data plane failed."""
