"""kafkanet: Kafka on EC2 behind a NAT instance, from a compact spec to checked Terraform.

The package is in layers; each subpackage imports only the ones below it
(import-linter holds it to that: ``[tool.importlinter]`` in ``pyproject.toml``)::

    cli             the `kafkanet` command: arguments in, exit codes out
    access          SSH through the bastion, SOCKS5, `ssh`/`tunnel`, the probes' vantage
    environment     plan/apply/destroy/e2e, the inventory, host keys, ssh_config, the suite run
    module | terraform | localaws
                    spec → files | the terraform CLI | the local AWS API (moto)
    spec            the topology model, pure: no disk, no network
    base            the error family, atomic writes, process helpers, the loopback guard

The local data plane (``localvpc``) is a library of its own below
``environment``; the integration suite (``integration``) sits on top and may
import only ``access``, ``environment.inventory`` and ``base.errors``.
"""

__version__ = "0.1.0"
