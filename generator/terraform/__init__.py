"""The terraform CLI: the python-terraform adapter, its CLI configuration, the shared provider.

``adapter`` is the one place python-terraform 0.10.1 is driven (with the
care Terraform 1.x needs) and terraform's processes are run, streamed and
stopped; ``tfcli`` finds the binary and writes the CLI configuration (provider
mirror or registry); ``provider`` runs one AWS provider per kafkanet command
for terraform to reattach to. May import only ``generator.base``.
"""
