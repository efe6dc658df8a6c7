"""The terraform CLI: the python-terraform adapter and its process runner, its CLI configuration, the shared provider.

``adapter`` is the one place python-terraform 0.10.1 is driven (with the
care Terraform 1.x needs), with timeouts, retries and terraform's errors;
``process`` runs terraform's processes in their own group, streams their
lines and stops them; ``tfcli`` finds the binary and writes the CLI
configuration (provider mirror or registry); ``provider`` runs one AWS
provider per kafkanet command for terraform to reattach to. May import only
``generator.base``.
"""
