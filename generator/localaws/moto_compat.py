"""moto's server, with the fixes that make it behave like EC2 where kafkanet depends on it.

Run as ``python -m generator.localaws.moto_compat -H 127.0.0.1 -p PORT`` (same arguments
as ``python -m moto.server``). Each fix names the EC2 behaviour it restores;
none adds anything EC2 does not do. Two additions are no EC2 behaviour and no
EC2 client sees them: the IAM checks' record (only while IAM is enforced), and a counter of the EC2 calls that may have changed state,
served at ``GENERATION_PATH`` (a long poll: ``?after=N&wait=S`` answers as soon
as the count is not N, or after S seconds), so that the local data plane's live
daemon (``localvpc.live``) reads moto's state again only when it may have changed.
"""

from __future__ import annotations

import os
import sys
import threading

# The attachment state EC2 reports while a detach waits for the instance's OS to let go.
BUSY = "busy"


# Answers GET with the number of EC2 calls so far that were not Describe*/Get* (plain text);
# with ?after=N&wait=S it first waits (at most S seconds, at most MAX_WAIT) until the count is not N.
GENERATION_PATH = "/kafkanet/ec2-generation"
MAX_WAIT = 30.0
_generation = [0]
_changed = threading.Condition()
_ec2_calls = threading.Lock()  # see call_action in _count_ec2_changes


def patch() -> None:
    """Apply every fix (idempotent)."""
    _detach_interfaces_at_termination()
    _mounted_volumes_stay_attached()
    _record_checked_actions(os.environ.get("KAFKANET_MOTO_ACTION_LOG"))
    _count_ec2_changes()


def _record_checked_actions(path: str | None) -> None:
    """Not an EC2 fix: a record of each action moto's IAM enforcement checked, for the
    least-privilege proof (``allowed|denied ACTION USER``, one line each, appended).
    moto calls the check only while it enforces IAM, so the file exists only then."""
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase.check_action_permitted
    if path is None or getattr(original, "_kafkanet", False):
        return

    def check_action_permitted(self, resource):  # type: ignore[no-untyped-def]
        verdict = "denied"
        try:
            original(self, resource)
            verdict = "allowed"
        finally:
            user = getattr(self._access_key, "arn", "?").rsplit("/", 1)[-1]
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"{verdict} {self._action} {user}\n")

    check_action_permitted._kafkanet = True  # type: ignore[attr-defined]
    IAMRequestBase.check_action_permitted = check_action_permitted


def _count_ec2_changes() -> None:
    """Count the EC2 calls that may change state; serve the count at GENERATION_PATH."""
    from moto.ec2.responses import EC2Response
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_call = EC2Response.call_action
    if getattr(original_call, "_kafkanet", False):
        return
    original_app = DomainDispatcherApplication.__call__

    def call_action(self):  # type: ignore[no-untyped-def]
        # One EC2 call at a time: moto's server answers in threads, and its backend is not safe under
        # concurrent changes to one object (terraform creates a group's rules in parallel; moto merges
        # rules of one protocol and port range into one object, and answered a fresh rule with
        # InvalidPermission.Duplicate). Each call takes milliseconds; the long poll is not one of them.
        with _ec2_calls:
            try:
                return original_call(self)
            finally:  # after the change (a failed call counts too: one needless read)
                if not self._get_action().startswith(("Describe", "Get")):
                    with _changed:
                        _generation[0] += 1
                        _changed.notify_all()

    def app(self, environ, start_response):  # type: ignore[no-untyped-def]
        if environ.get("PATH_INFO") == GENERATION_PATH and environ.get("REQUEST_METHOD") == "GET":
            from urllib.parse import parse_qs

            query = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                after = int(query["after"][0])
                wait = min(MAX_WAIT, max(0.0, float(query.get("wait", ["0"])[0])))
            except (KeyError, ValueError):
                after, wait = None, 0.0
            with _changed:
                if after is not None:
                    _changed.wait_for(lambda: _generation[0] != after, timeout=wait)
                body = f"{_generation[0]}\n".encode()
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return original_app(self, environ, start_response)

    call_action._kafkanet = True  # type: ignore[attr-defined]
    EC2Response.call_action = call_action
    DomainDispatcherApplication.__call__ = app


def _detach_interfaces_at_termination() -> None:
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


def _mounted_volumes_stay_attached() -> None:
    """DetachVolume from a running instance never completes, as on EC2 when the OS holds a mount.

    EC2 asks the running instance's OS to release the device; while a file system
    on it is mounted the OS does not, and the attachment stays ``busy`` (the volume
    ``in-use``) "until you unmount the volume, force detachment, reboot the
    instance, or all three" (the DetachVolume API reference). ``terraform destroy``
    of an ``aws_volume_attachment`` in front of a mounted volume fails on it
    (hashicorp/terraform-provider-aws#4770). moto has no OS and detaches at once.
    Every kafkanet volume on a running instance is mounted (the brokers' Kafka log),
    so here a detach from a running instance sticks. What releases a volume on EC2
    releases it here: stopping or rebooting the instance (its OS unmounts on the
    way down), terminating it (the volume detaches with it), or ``Force``. A detach
    from a stopped instance completes at once.
    """
    from moto.core.responses import ActionResult
    from moto.ec2.models.instances import Instance
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    original_detach = ElasticBlockStore.detach_volume
    if getattr(original_detach, "_kafkanet", False):
        return
    original_stop, original_reboot = Instance.stop, Instance.reboot

    def detach_volume(self):  # type: ignore[no-untyped-def]
        volume = self.ec2_backend.get_volume(self._get_param("VolumeId"))
        attachment = volume.attachment
        asked_for = self._get_param("InstanceId")
        if (
            attachment is None
            or self._get_bool_param("Force", False)
            or not attachment.instance.is_running()
            or (asked_for and asked_for != attachment.instance.id)
        ):
            return original_detach(self)  # moto's own answers and errors
        self.error_on_dryrun()
        attachment.status = BUSY
        return ActionResult(
            {
                "VolumeId": volume.id,
                "InstanceId": attachment.instance.id,
                "Device": attachment.device,
                "State": BUSY,
                "AttachTime": attachment.attach_time,
            }
        )

    def release_stuck_volumes(instance) -> None:  # type: ignore[no-untyped-def]
        for device, mapped in list(instance.block_device_mapping.items()):
            volume = instance.ec2_backend.volumes.get(mapped.volume_id)
            if volume is not None and volume.attachment is not None and volume.attachment.status == BUSY:
                instance.ec2_backend.detach_volume(volume.id, instance.id, device)

    def stop(self):  # type: ignore[no-untyped-def]
        state = original_stop(self)
        release_stuck_volumes(self)
        return state

    def reboot(self):  # type: ignore[no-untyped-def]
        original_reboot(self)
        release_stuck_volumes(self)

    detach_volume._kafkanet = True  # type: ignore[attr-defined]
    ElasticBlockStore.detach_volume = detach_volume
    Instance.stop = stop
    Instance.reboot = reboot


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
