"""The integration suite: checks a live kafkanet environment from the operator's side.

Run as ``kafkanet test SPEC`` (or ``pytest -p integration.plugin integration/
--inventory PATH``). Its only inputs are the inventory
(:mod:`generator.environment.inventory`) and the AWS API; it
knows nothing of how the environment was made, so the same checks run against
real AWS and against the local target (moto + the local data plane).

Modules: ``test_control_plane`` (boto3 describe calls), ``test_outbound``
(HTTP from every instance through the NAT), ``test_no_inbound`` (nothing
answers from outside but the bastion's SSH), ``test_kafka`` (kafka-python
through the bastion). Helpers: :mod:`integration.support` (assertions, poll),
:mod:`integration.aws`, :mod:`integration.probes`, :mod:`integration.records`,
:mod:`integration.hosts` (testinfra over the session transport),
:mod:`integration.gate` (expected counts, allowed skips, per-host summary),
:mod:`integration.plugin` (options, session fixtures, the gate's hooks).

It may import only the public API ``generator`` offers it: the SSH access
(:mod:`generator.access`), the inventory schema
(:mod:`generator.environment.inventory`) and the error family; never the data
plane (``localvpc``). import-linter holds it to that (``pyproject.toml``).
``tests/devenv.py`` builds a throw-away local environment for developing it.
"""
