"""moto's server, with the fixes that make it behave like EC2 where kafkanet depends on it.

Run as ``python -m generator.localaws.moto_compat -H 127.0.0.1 -p PORT`` (same arguments
as ``python -m moto.server``). Each fix names the EC2 behaviour it restores;
none adds anything EC2 does not do.
"""

from __future__ import annotations

import sys


def patch() -> None:
    from moto.ec2.models.instances import Instance

    original_terminate = Instance.terminate
    if getattr(original_terminate, "_kafkanet", False):
        return

    def terminate(self):  # type: ignore[no-untyped-def]
        # EC2 detaches a network interface that outlives its instance (one created
        # separately, DeleteOnTermination false); moto keeps it attached to the
        # terminated instance, so deleting it afterwards fails with "cannot be detached".
        state = original_terminate(self)
        for nic in list(self.nics.values()):
            if nic.instance is self and not nic.delete_on_termination:
                nic.instance = None
                nic.attachment_id = None
                nic.attach_time = None
                nic.device_index = None
                nic.status = "available"
        return state

    terminate._kafkanet = True  # type: ignore[attr-defined]
    Instance.terminate = terminate


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
