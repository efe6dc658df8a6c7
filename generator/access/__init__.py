"""Reaching an applied environment through its bastion: SSH, SOCKS5, sshuttle, `kafkanet ssh` and `kafkanet tunnel`.

``ssh`` is the one SSH transport (paramiko, pinned host keys, a
``direct-tcpip`` hop per host, commands run on them); ``proxy`` runs the
inventory's proxy command that may carry it; ``socks`` is the SOCKS5 server
over its channels; ``errors`` are what these raise; ``commands`` are the
``ssh``/``tunnel`` commands; ``vpn`` is ``tunnel --vpn`` (sshuttle over the
environment's ssh_config, for clients that cannot use SOCKS5); ``vantage``
finds where the operator's connections start (for the suite's reachability
probes). Part of the public
API the integration suite may import. May import the layers below it.
"""
