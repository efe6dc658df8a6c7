"""A broker's Kafka configuration from its user data, as the local tansu broker can run it. Pure.

On AWS each broker runs Apache Kafka configured by the ``server.properties``
its cloud-init user data writes; locally each broker namespace runs tansu, a
Kafka-compatible broker with a memory store and one listener. This module owns
what of that file tansu honours and how:

* :func:`parse_properties`: the Java properties format (comments, ``key=value``,
  ``key: value``, ``key value``, continuation lines, escapes), as
  ``java.util.Properties.load`` reads it;
* :func:`broker`: the PLAINTEXT client listener of ``listeners`` (the address
  tansu binds in the broker's namespace, and its port) and its entry in
  ``advertised.listeners`` (what tansu gives clients in metadata, reachable or
  not), checked the way Kafka checks them at start-up;
* :data:`UNHONOURED` and :data:`UNHONOURED_FAMILIES`: the settings tansu accepts
  but cannot honour, each with why (the README's table of where the local
  target differs from AWS says the same). Any other key, and any listener
  that is not PLAINTEXT, is a :class:`PlaneUserError` naming the broker, the
  key and what to do: never silently dropped;
* :func:`topics`: the topics broker 1's boot creates, from
  ``/etc/kafkanet/topics.json`` in its user data;
* :func:`tansu_argv`: the command line that runs it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping

from localvpc.errors import PlaneUserError
from localvpc.model import KafkaBroker, Topic

SERVER_PROPERTIES = "/etc/kafka/server.properties"
TOPICS_PATH = "/etc/kafkanet/topics.json"
BROKER_ROLE = "broker"  # the kafkanet:role tag of an instance that must run Kafka
STORAGE = "memory://tansu/"

_KRAFT = "tansu has no KRaft quorum: each local broker is a one-node cluster (node 111) with its own store"
_ONE_COPY = "one node, one copy of every partition: replication and in-sync replica counts do not apply"
_MEMORY = "the store is in memory (memory://tansu/) and lives as long as the plane"
# key -> why tansu cannot honour it
UNHONOURED: dict[str, str] = {
    "process.roles": _KRAFT,
    "node.id": _KRAFT,
    "controller.quorum.voters": _KRAFT,
    "controller.quorum.bootstrap.servers": _KRAFT,
    "controller.listener.names": _KRAFT + "; the controller listeners it names are not served",
    "inter.broker.listener.name": "no broker-to-broker traffic; it must name the one client listener",
    "listener.security.protocol.map": "tansu speaks PLAINTEXT only; every entry must map to PLAINTEXT",
    "log.dirs": _MEMORY,
    "log.dir": _MEMORY,
    "num.partitions": "tansu auto-creates a topic with 4 partitions, whatever this says",
    "auto.create.topics.enable": "tansu creates a topic the first time a producer names it (4 partitions);"
    " the plane creates the listed topics at build, so only other names differ",
    "default.replication.factor": _ONE_COPY,
    "min.insync.replicas": _ONE_COPY + " (acks=all is met by the one copy)",
    "offsets.topic.replication.factor": _ONE_COPY,
    "broker.rack": "one node: no racks to spread replicas over",
}
# key prefix -> why
UNHONOURED_FAMILIES: dict[str, str] = {
    "transaction.state.log.": _ONE_COPY,
    "log.retention.": _MEMORY + "; nothing is deleted by age or size",
}

# Kafka's default when listener.security.protocol.map is not set
_DEFAULT_PROTOCOLS = {p: p for p in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")}
_DEFAULT_LISTENERS = "PLAINTEXT://:9092"
_WS = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_LISTENER = re.compile(r"([A-Za-z0-9_]+)://(\[[^\]]*\]|[^:/\[\]]*):([0-9]+)")


# --- the Java properties format -------------------------------------------


def _continues(line: str) -> bool:
    """Whether a line ends in an odd number of backslashes (the next line continues it)."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, logical line)``: comments and blank lines skipped, continuations joined."""
    natural = re.split(r"\r\n|\r|\n", text)
    i = 0
    while i < len(natural):
        number, line = i + 1, natural[i].lstrip(_WS)
        i += 1
        if not line or line[0] in "#!":
            continue  # a comment never continues, even when it ends in a backslash
        while _continues(line) and i < len(natural):
            line = line[:-1] + natural[i].lstrip(_WS)
            i += 1
        line = line[:-1] if _continues(line) else line  # a backslash on the last line continues nothing
        if line:  # Java drops a logical line that is empty, even one made of continuations
            yield number, line


def _unescape(text: str, number: int) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        c = text[i + 1]
        if c == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"line {number}: malformed \\uxxxx escape")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_ESCAPES.get(c, c))
            i += 2
    return "".join(out)


def parse_properties(text: str) -> dict[str, str]:
    """The keys and values of a Java properties file (the last of a repeated key wins).

    ValueError names the line of a malformed ``\\uxxxx`` escape, as Java refuses one.
    """
    found: dict[str, str] = {}
    for number, line in _logical_lines(text):
        end = 0
        while end < len(line) and line[end] not in "=:" + _WS:
            end += 2 if line[end] == "\\" else 1
        end = min(end, len(line))
        rest = line[end:].lstrip(_WS)
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(_WS)
        found[_unescape(line[:end], number)] = _unescape(rest, number)
    return found


# --- the broker ---------------------------------------------------------------


def _error(host: str, key: str, problem: str, todo: str) -> PlaneUserError:
    return PlaneUserError(f"local data plane: {host}: {SERVER_PROPERTIES}: {key}: {problem}; {todo}")


def _listeners(host: str, key: str, value: str) -> list[tuple[str, str, int]]:
    """``[(NAME, host, port)]`` of a listeners-style value."""
    found = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        match = _LISTENER.fullmatch(entry)
        port = int(match.group(3)) if match else 0
        if not match or not 0 < port < 65536:
            raise _error(host, key, f"{entry!r} is not NAME://HOST:PORT", "write e.g. PLAINTEXT://10.0.1.10:9092")
        found.append((match.group(1).upper(), match.group(2), port))
    return found


def _protocols(host: str, props: Mapping[str, str]) -> dict[str, str]:
    key = "listener.security.protocol.map"
    if key not in props:
        return dict(_DEFAULT_PROTOCOLS)
    protocols = {}
    for entry in (e.strip() for e in props[key].split(",")):
        name, sep, protocol = entry.partition(":")
        if not entry:
            continue
        if not sep or not name.strip():
            raise _error(host, key, f"{entry!r} is not NAME:PROTOCOL", "write e.g. PLAINTEXT:PLAINTEXT")
        if protocol.strip().upper() != "PLAINTEXT":
            raise _error(host, key, f"listener {name.strip()} uses {protocol.strip()}",
                         "tansu speaks PLAINTEXT only: map every listener to PLAINTEXT, or apply to AWS")  # fmt: skip
        protocols[name.strip().upper()] = "PLAINTEXT"
    return protocols


def _bind_address(host: str, private_ip: str, address: str, port: int) -> str:
    if address in ("", "0.0.0.0"):
        return "0.0.0.0"
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None and ip.version == 4 and (str(ip) == private_ip or ip.is_loopback):
        return str(ip)
    raise _error(host, "listeners", f"{address}:{port} is not an address of this instance ({private_ip})",
                 f"Kafka would fail to bind it: listen on {private_ip}, 0.0.0.0 or nothing (PLAINTEXT://:{port})")  # fmt: skip


def _check_keys(host: str, props: Mapping[str, str]) -> tuple[str, ...]:
    """The keys tansu accepts but cannot honour; PlaneUserError for any other it does not know."""
    handled = {"listeners", "advertised.listeners"}
    unhonoured = []
    for key in props:
        if key in handled:
            continue
        if key in UNHONOURED or any(key.startswith(prefix) for prefix in UNHONOURED_FAMILIES):
            unhonoured.append(key)
            continue
        raise _error(host, key, "a setting the local Kafka stand-in (tansu) can neither honour nor knows to ignore",
                     "remove it, apply to AWS, or if ignoring it locally is harmless add it to UNHONOURED in"
                     " localvpc/kafkaconf.py and to the README's table of where the local target differs")  # fmt: skip
    return tuple(unhonoured)


def broker(host: str, private_ip: str, properties: str) -> KafkaBroker:
    """What tansu runs for ``host`` from the text of its server.properties; PlaneUserError when it cannot."""
    try:
        props = parse_properties(properties)
    except ValueError as exc:
        raise PlaneUserError(f"local data plane: {host}: {SERVER_PROPERTIES}: {exc}") from None
    unhonoured = _check_keys(host, props)
    protocols = _protocols(host, props)
    controllers = {n.strip().upper() for n in props.get("controller.listener.names", "").split(",") if n.strip()}
    listeners = _listeners(host, "listeners", props.get("listeners", _DEFAULT_LISTENERS))
    for name, _, _ in listeners:
        if name not in protocols:
            raise _error(host, "listeners", f"listener {name} is not in listener.security.protocol.map",
                         f"add {name}:PLAINTEXT to it")  # fmt: skip
        if protocols[name] != "PLAINTEXT":
            raise _error(host, "listeners", f"listener {name} uses {protocols[name]} (Kafka's default map)",
                         "tansu speaks PLAINTEXT only: use a PLAINTEXT listener, or apply to AWS")  # fmt: skip
    clients = [entry for entry in listeners if entry[0] not in controllers]
    if len(clients) != 1:
        seen = ", ".join(name for name, _, _ in clients) or "none"
        raise _error(host, "listeners", f"tansu serves exactly one client listener, found {seen}",
                     "keep one PLAINTEXT listener besides the controller's")  # fmt: skip
    name, address, port = clients[0]
    inter = props.get("inter.broker.listener.name", name).strip().upper()
    if inter != name:
        raise _error(host, "inter.broker.listener.name", f"{inter} is not the client listener {name}",
                     f"set it to {name}")  # fmt: skip
    bind = _bind_address(host, private_ip, address, port)
    advertised = [a for a in _listeners(host, "advertised.listeners", props.get("advertised.listeners", ""))
                  if a[0] == name] or [clients[0]]  # fmt: skip
    _, ad_address, ad_port = advertised[0]
    try:
        ad_ip = ipaddress.ip_address(ad_address.strip("[]"))
    except ValueError:
        shown = ad_address or "its host name (the address is empty)"
        raise _error(host, "advertised.listeners", f"listener {name} advertises {shown}",
                     "the local plane has no DNS, so clients could not resolve it: advertise an IPv4 address,"
                     f" e.g. PLAINTEXT://{private_ip}:{port}") from None  # fmt: skip
    if ad_ip.version != 4 or ad_ip.is_unspecified:
        raise _error(host, "advertised.listeners", f"listener {name} advertises {ad_address}",
                     f"Kafka refuses a meta-address and the plane is IPv4: advertise e.g. {private_ip}:{port}")  # fmt: skip
    return KafkaBroker(
        listener_url=f"tcp://{bind}:{port}",
        advertised_url=f"tcp://{ad_ip}:{ad_port}",
        port=port,
        unhonoured=unhonoured,
    )


def for_host(host: str, private_ip: str, role: str | None, files: Mapping[str, str] | None) -> KafkaBroker | None:
    """The broker ``host`` runs from its user data's files (None: its user data could not be read).

    A host whose files hold no server.properties runs no broker; one tagged
    ``kafkanet:role=broker`` must have it, as Kafka will not start without it.
    """
    if files is not None and SERVER_PROPERTIES in files:
        return broker(host, private_ip, files[SERVER_PROPERTIES])
    if role == BROKER_ROLE:
        why = "its user data is not valid cloud-config" if files is None else "its user data writes none"
        raise PlaneUserError(
            f"local data plane: {host}: tagged kafkanet:role={BROKER_ROLE} but has no {SERVER_PROPERTIES} ({why});"
            " Kafka would not start on AWS either: render the broker's user data with `kafkanet generate`"
        )
    return None


# --- topics and the command line ----------------------------------------------


def topics(host: str, files: Mapping[str, str] | None) -> tuple[Topic, ...] | None:
    """The topics in ``host``'s /etc/kafkanet/topics.json (None: it has none); PlaneUserError when malformed."""
    if not files or TOPICS_PATH not in files:
        return None
    where = f"local data plane: {host}: {TOPICS_PATH}"
    try:
        entries = json.loads(files[TOPICS_PATH])
    except ValueError as exc:
        raise PlaneUserError(f"{where}: not JSON ({exc})") from None
    if not isinstance(entries, list):
        raise PlaneUserError(f"{where}: expected a list of {{name, partitions, replication_factor}}")
    found = []
    for i, entry in enumerate(entries):
        fields = ("name", "partitions", "replication_factor")
        ok = isinstance(entry, dict) and set(entry) == set(fields) and isinstance(entry["name"], str)
        ok = ok and all(type(entry[k]) is int and entry[k] > 0 for k in fields[1:])
        if not ok:
            raise PlaneUserError(f"{where}: entry {i}: expected exactly {{name, partitions, replication_factor}}"
                                 f" with a name and two positive integers, saw {entry!r}")  # fmt: skip
        found.append(Topic(entry["name"], entry["partitions"], entry["replication_factor"]))
    return tuple(found)


def merge_topics(carried: Mapping[str, tuple[Topic, ...]], notes: list[str]) -> tuple[Topic, ...]:
    """Every topic some host's user data lists, once; the first host's definition of a name wins."""
    merged: dict[str, tuple[str, Topic]] = {}
    for host, listed in carried.items():
        for topic in listed:
            first = merged.setdefault(topic.name, (host, topic))
            if first[1] != topic:
                notes.append(f"{host}: {TOPICS_PATH}: topic {topic.name} differs from {first[0]}'s; {first[0]}'s is created")
    return tuple(topic for _, topic in merged.values())


def tansu_argv(tansu: str, kafka: KafkaBroker, cluster_id: str) -> list[str]:
    """tansu's command line for ``kafka`` (a memory store, the cluster id every local broker shares)."""
    return [
        tansu, "broker",
        "--listener-url", kafka.listener_url,
        "--advertised-listener-url", kafka.advertised_url,
        "--storage-engine", STORAGE,
        "--cluster-id", cluster_id,
    ]  # fmt: skip
