"""The project's error family and the exit codes it maps to.

kafkanet's exit codes (documented in the README and ``kafkanet --help``):

====  ==========================================================================
0     passed / done
1     checks failed: the integration suite, ``kafkanet check``'s findings, or a
      remote command's own status 1 (``kafkanet ssh HOST -- CMD`` exits with it)
2     user error: bad spec, bad arguments, a missing prerequisite; nothing was
      changed (:class:`UserError`)
3     infrastructure error: terraform apply/plan/destroy, moto, the local data
      plane, SSH or a tool kafkanet runs failed (:class:`InfraError`)
4     leftovers: resources of the environment remain after destroy, or teardown
      was abandoned; the message lists them and says how to finish
      (:class:`LeftoversError`)
130   interrupted (Ctrl-C or SIGTERM) with nothing left behind
====  ==========================================================================

User errors are caught by the CLI in one place, printed one line per problem.
Anything outside this family is a bug and is allowed to crash loudly with a
traceback.
"""

from __future__ import annotations

PASSED = 0
CHECKS_FAILED = 1
USER_ERROR = 2
INFRA_ERROR = 3
LEFTOVERS = 4
INTERRUPTED = 130

#: The table above, for ``kafkanet --help`` and the README.
EXIT_CODES = (
    (PASSED, "passed (or the command did what it was asked)"),
    (CHECKS_FAILED, "checks failed (integration suite, `kafkanet check` findings)"),
    (USER_ERROR, "user error: bad spec or arguments, missing prerequisite; nothing changed"),
    (INFRA_ERROR, "infrastructure error: apply, plan or destroy (terraform, moto, data plane, SSH) failed"),
    (LEFTOVERS, "leftovers found: resources remain after destroy or an abandoned teardown; listed"),
    (INTERRUPTED, "interrupted, teardown finished and nothing left"),
)


class KafkanetError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = CHECKS_FAILED

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise TypeError("a KafkanetError needs at least one problem line")
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


class UserError(KafkanetError):
    """Something the user can fix: bad input, bad arguments, missing tool."""

    exit_code = USER_ERROR


class SpecError(UserError):
    """The topology spec is invalid; one problem line per field."""


class PrerequisiteError(UserError):
    """A tool or permission the command needs is missing (terraform, root...)."""


class InfraError(KafkanetError):
    """Terraform, moto, the local data plane, SSH or a tool kafkanet runs failed."""

    exit_code = INFRA_ERROR


class LeftoversError(InfraError):
    """Resources of the environment remain (after destroy, or when teardown was abandoned)."""

    exit_code = LEFTOVERS
