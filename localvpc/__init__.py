"""The local data plane: the applied EC2 state (read back from moto) as real packets in network namespaces.

Public entry points::

    build(env_name, ec2_client, key_path, state_dir, *, endpoint_url=None) -> PlaneInfo
    teardown(env_name) -> TeardownReport
    status(env_name) -> PlaneStatus

plus :func:`netns_socket` to open a TCP connection from inside one of the
plane's namespaces (e.g. the operator's) without any root-namespace route.
"""

from localvpc.netns import http_get, netns_socket
from localvpc.plane import build, build_plane, status, teardown
from localvpc.results import PlaneInfo, PlaneStatus, TeardownReport

__all__ = [
    "PlaneInfo",
    "PlaneStatus",
    "TeardownReport",
    "build",
    "build_plane",
    "http_get",
    "netns_socket",
    "status",
    "teardown",
]
