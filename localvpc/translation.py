"""Translation of the applied EC2 state into the plane model: :func:`translate`. Pure.

Owns how a snapshot of ``describe_*`` answers (see :mod:`localvpc.snapshot`)
becomes a :class:`~localvpc.model.Plane`: hosts and their addresses (named from
their Name tag), the Kafka broker each runs and the topics to create (from
their user data, see :mod:`localvpc.kafkaconf`), the route table each subnet
uses (local, internet gateway, instance ENI, or blackhole where AWS would
drop), security-group rules with group sources resolved to addresses,
source/dest check, every public address moto reports remapped into
198.51.100.0/24, the bastion, and where the operator, web host and outsider
stand. No I/O, no clock, no randomness: the same snapshot always gives the same
plane.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from localvpc import kafkaconf, userdata
from localvpc.errors import PlaneUserError
from localvpc.model import (
    INTERNET_NET,
    NAT_MONITOR_PATH,
    NAT_SETUP_PATH,
    PUBLIC_POOL,
    Host,
    Internet,
    Plane,
    PublicAddress,
    Route,
    RouteTable,
    SecurityGroup,
    SgRule,
    Subnet,
    Topic,
)

ENV_TAG = "kafkanet:env"
ROLE_TAG = "kafkanet:role"
BASTION_ROLES = ("nat", "bastion")

FIRST_PUBLIC_HOST = 10  # 198.51.100.10 is the first emulated public address
FIRST_ROUTE_TABLE = 100  # kernel table number of the first route table
AUTO_PREFIX = "auto:"  # key of a public address EC2 re-assigns and moto does not show
RESERVED_NAMES = frozenset({"router", "igw", "internet", "operator", "web", "outsider"})
_NAME_OK = re.compile(r"[^a-z0-9-]+")


# --- helpers ---------------------------------------------------------------


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or [] if "Key" in t}


def _sorted_ips(ips: Iterable[str]) -> list[str]:
    return sorted(set(ips), key=lambda ip: int(ipaddress.ip_address(ip)))


def _short_name(name_tag: str, env: str, fallback: str) -> str:
    name = name_tag[len(env) + 1 :] if env and name_tag.startswith(f"{env}-") else name_tag
    name = _NAME_OK.sub("-", name.lower()).strip("-")
    return name or fallback


def _port(value: Any) -> int | None:
    if value is None or int(value) == -1:
        return None
    return int(value)


def _protocol(value: str) -> str:
    return {"-1": "all", "6": "tcp", "17": "udp", "1": "icmp"}.get(str(value).lower(), str(value).lower())


# --- translation -----------------------------------------------------------


def translate(
    snapshot: Mapping[str, Any],
    *,
    public_map: Mapping[str, str] | None = None,
    table_numbers: Mapping[str, int] | None = None,
    internet: Internet | None = None,
) -> Plane:
    """The plane that emulates ``snapshot``; PlaneUserError when it cannot be emulated.

    Where moto and AWS disagree the AWS behaviour wins: the instance attribute
    ``sourceDestCheck`` is trusted over the ENI's field (which moto always reports
    True), and a route whose target no running instance holds is a blackhole even
    when moto calls it active.

    Public addresses follow EC2's rules, not the field moto leaves on an
    interface: an instance's public IPv4 is the Elastic IP associated with its
    primary private address; without one, an instance in a subnet that assigns
    public addresses at launch has its launch address, and when moto no longer
    holds one (moto drops it for good once an EIP is associated, and keeps the
    moved EIP on the old interface) it gets a new one, as EC2 gives it "from
    Amazon's pool" when its EIP is disassociated (kind ``auto``, keyed
    ``auto:<instance id>``). The subnet's current setting stands in for the
    interface's launch-time one, which the API does not show.

    ``public_map`` (moto address -> emulated address) and ``table_numbers``
    (route table id -> kernel table) pin what an earlier translation chose, so a
    plane that follows the API keeps its addresses and tables when an address
    or a table is added; new ones take free slots. Without them the choice is
    by numeric and id order. ``internet`` pins where the operator, web host and
    outsider stand (they are namespaces already built: a later change of the
    bastion's SSH rule moves nobody).
    """
    notes: list[str] = []
    vpcs = snapshot.get("vpcs") or []
    if len(vpcs) != 1:
        raise PlaneUserError(f"local data plane: expected one VPC in the applied state, found {len(vpcs)}")
    vpc = vpcs[0]
    vpc_id = vpc["VpcId"]
    env = _tags(vpc).get(ENV_TAG) or str(snapshot.get("env", ""))
    cidrs = [
        a["CidrBlock"]
        for a in vpc.get("CidrBlockAssociationSet") or []
        if (a.get("CidrBlockState") or {}).get("State", "associated") == "associated"
    ] or [vpc["CidrBlock"]]
    vpc_cidrs = tuple(dict.fromkeys(cidrs))

    igws = [
        g["InternetGatewayId"]
        for g in snapshot.get("internet_gateways") or []
        if any(
            a.get("VpcId") == vpc_id and a.get("State", "available") in ("available", "attached")
            for a in g.get("Attachments") or []
        )
    ]
    igw_id = igws[0] if igws else None

    # Route tables: kernel numbers in id order, subnet -> table (explicit or main).
    raw_tables = sorted(
        (t for t in snapshot.get("route_tables") or [] if t.get("VpcId") == vpc_id), key=lambda t: t["RouteTableId"]
    )
    main_table = next(
        (t["RouteTableId"] for t in raw_tables for a in t.get("Associations") or [] if a.get("Main")), None
    )
    explicit = {
        a["SubnetId"]: t["RouteTableId"] for t in raw_tables for a in t.get("Associations") or [] if a.get("SubnetId")
    }

    subnets = []
    for s in sorted(snapshot.get("subnets") or [], key=lambda s: ipaddress.ip_network(s["CidrBlock"])):
        if s.get("VpcId") != vpc_id:
            continue
        table = explicit.get(s["SubnetId"], main_table)
        if table is None:
            raise PlaneUserError(f"local data plane: subnet {s['SubnetId']} has no route table and the VPC no main one")
        network = ipaddress.ip_network(s["CidrBlock"])
        subnets.append(
            Subnet(
                id=s["SubnetId"],
                name=_tags(s).get("Name", s["SubnetId"]),
                cidr=str(network),
                az=s.get("AvailabilityZone", ""),
                gateway=str(network.network_address + 1),
                route_table=table,
                map_public_ip=bool(s.get("MapPublicIpOnLaunch")),
            )
        )
    subnet_by_id = {s.id: s for s in subnets}

    # Instances.
    attributes = snapshot.get("instance_attributes") or {}
    eips = [a for a in snapshot.get("addresses") or [] if a.get("PublicIp")]
    eip_ips = {a["PublicIp"] for a in eips}
    raw_instances = sorted(
        (i for r in snapshot.get("reservations") or [] for i in r.get("Instances") or []),
        key=lambda i: (_tags(i).get("Name", ""), i["InstanceId"]),
    )
    hosts_partial: list[dict[str, Any]] = []
    monitored: list[str] = []  # NATs whose user data installs the pair's monitor
    topics: dict[str, tuple[Topic, ...]] = {}  # host -> the topics its user data lists
    used_names: set[str] = set()
    for inst in raw_instances:
        if (inst.get("State") or {}).get("Name", "running") not in ("pending", "running"):
            continue
        iid = inst["InstanceId"]
        tags = _tags(inst)
        enis = sorted(
            inst.get("NetworkInterfaces") or [], key=lambda e: (e.get("Attachment") or {}).get("DeviceIndex", 0)
        )
        primary = enis[0] if enis else {}
        if len(enis) > 1 or len(primary.get("PrivateIpAddresses") or []) > 1:
            notes.append(f"{iid}: only the primary private address of the primary ENI is emulated")
        private_ip = primary.get("PrivateIpAddress") or inst.get("PrivateIpAddress")
        subnet_id = primary.get("SubnetId") or inst.get("SubnetId")
        if not private_ip or subnet_id not in subnet_by_id:
            notes.append(f"{iid}: no private address in a subnet of {vpc_id}; not emulated")
            continue
        name = _short_name(tags.get("Name", ""), env, iid)
        if name in RESERVED_NAMES or name in used_names:
            name = f"{name}-{iid[-6:]}"
        used_names.add(name)
        attr = attributes.get(iid, {})
        sdc = attr.get("sourceDestCheck")
        if sdc is None:
            sdc = inst.get("SourceDestCheck", True)
        files: dict[str, str] | None = None
        try:
            files = userdata.write_files(userdata.decode_user_data(attr.get("userData")))
        except ValueError as exc:
            notes.append(f"{name}: user data {exc}; cloud-init would fail, nothing from it runs")
        if files and NAT_MONITOR_PATH in files and tags.get(ROLE_TAG) in BASTION_ROLES:
            monitored.append(name)
        kafka = kafkaconf.for_host(name, private_ip, tags.get(ROLE_TAG), files)
        listed = kafkaconf.topics(name, files)
        if listed is not None:
            topics[name] = listed
        groups = [g["GroupId"] for g in primary.get("Groups") or inst.get("SecurityGroups") or []]
        public = (primary.get("Association") or {}).get("PublicIp") or inst.get("PublicIpAddress")
        hosts_partial.append(
            {
                "name": name,
                "instance_id": iid,
                "name_tag": tags.get("Name", ""),
                "role": tags.get(ROLE_TAG),
                "eni_id": primary.get("NetworkInterfaceId", ""),
                "subnet_id": subnet_id,
                "private_ip": private_ip,
                "prefix_len": ipaddress.ip_network(subnet_by_id[subnet_id].cidr).prefixlen,
                "gateway": subnet_by_id[subnet_id].gateway,
                "security_groups": tuple(dict.fromkeys(groups)),
                "source_dest_check": bool(sdc),
                "moto_public_ip": public,
                "kafka": kafka,
                "setup_script": (files or {}).get(NAT_SETUP_PATH),
                "key_name": inst.get("KeyName"),
                "mac": _mac(primary.get("MacAddress")),
                "monitor_script": (files or {}).get(NAT_MONITOR_PATH) if name in monitored else None,
            }
        )
    if len(monitored) < 2:  # a single NAT's monitor only idles (no peer): not run, so the seed's plane is unchanged
        for h in hosts_partial:
            h["monitor_script"] = None

    # Public addresses: every Elastic IP, and each host's own address when it holds no EIP.
    candidates: dict[str, tuple[str, str | None]] = {}
    for a in eips:
        candidates[a["PublicIp"]] = ("eip", a.get("PrivateIpAddress"))
    eip_holders = {a.get("PrivateIpAddress") for a in eips if a.get("PrivateIpAddress")}
    for h in hosts_partial:
        moto = h["moto_public_ip"]
        if h["private_ip"] in eip_holders:
            continue  # EC2 releases the launch address when an EIP is associated
        if moto and moto not in eip_ips:
            candidates.setdefault(moto, ("launch", h["private_ip"]))
        elif subnet_by_id[h["subnet_id"]].map_public_ip:
            candidates[f"{AUTO_PREFIX}{h['instance_id']}"] = ("auto", h["private_ip"])
    pool = [str(ip) for ip in list(PUBLIC_POOL.hosts())[FIRST_PUBLIC_HOST - 1 : 200]]
    real = _sorted_ips(m for m in candidates if not m.startswith(AUTO_PREFIX))
    ordered = real + sorted(m for m in candidates if m.startswith(AUTO_PREFIX))
    pinned = dict(public_map or {})
    emulated = {moto: pinned[moto] for moto in ordered if moto in pinned}
    taken = set(pinned.values())
    free = [ip for ip in pool if ip not in taken]
    unpinned = [moto for moto in ordered if moto not in emulated]
    if len(unpinned) > len(free):
        raise PlaneUserError(f"local data plane: {len(ordered)} public addresses, the emulated pool holds {len(pool)}")
    emulated.update(zip(unpinned, free))
    host_by_ip = {h["private_ip"]: h["name"] for h in hosts_partial}
    public_addresses = tuple(
        PublicAddress(
            moto_ip=moto,
            emulated_ip=emulated[moto],
            kind=candidates[moto][0],
            private_ip=candidates[moto][1],
            host=host_by_ip.get(candidates[moto][1] or ""),
        )
        for moto in ordered
    )
    # A host's own public address: its EIP first, else its launch (or re-assigned) one.
    preferred: dict[str, PublicAddress] = {}
    for pa in sorted(public_addresses, key=lambda p: p.kind != "eip"):
        if pa.private_ip and pa.private_ip not in preferred:
            preferred[pa.private_ip] = pa
    hosts = tuple(
        Host(
            **{k: v for k, v in h.items() if k != "moto_public_ip"},
            moto_public_ip=_moto_ip(preferred.get(h["private_ip"])),
            public_ip=_emulated_ip(preferred.get(h["private_ip"])),
        )
        for h in hosts_partial
    )
    eni_owner = {h.eni_id: h for h in hosts if h.eni_id}
    instance_owner = {h.instance_id: h for h in hosts}

    # Security groups, with group sources resolved to their members' addresses.
    members: dict[str, list[str]] = {}
    for h in hosts:
        for g in h.security_groups:
            members.setdefault(g, []).append(f"{h.private_ip}/32")
    groups = []
    for g in sorted(snapshot.get("security_groups") or [], key=lambda g: g["GroupId"]):
        if g.get("VpcId", vpc_id) != vpc_id:
            continue
        groups.append(
            SecurityGroup(
                id=g["GroupId"],
                name=g.get("GroupName", g["GroupId"]),
                ingress=tuple(_rules("ingress", g.get("IpPermissions") or [], members, g["GroupId"], notes)),
                egress=tuple(_rules("egress", g.get("IpPermissionsEgress") or [], members, g["GroupId"], notes)),
            )
        )
    known_groups = {g.id for g in groups}
    for h in hosts:
        missing = [g for g in h.security_groups if g not in known_groups]
        if missing:
            raise PlaneUserError(f"local data plane: {h.name} uses security groups not in the state: {', '.join(missing)}")

    # Route tables.
    numbers = dict(table_numbers or {})
    next_number = max([FIRST_ROUTE_TABLE - 1, *numbers.values()]) + 1
    for t in raw_tables:
        if t["RouteTableId"] not in numbers:
            numbers[t["RouteTableId"]] = next_number
            next_number += 1
    route_tables = []
    for t in raw_tables:
        number = numbers[t["RouteTableId"]]
        routes = []
        for r in t.get("Routes") or []:
            destination = r.get("DestinationCidrBlock")
            if not destination:
                if r.get("DestinationPrefixListId"):
                    notes.append(
                        f"{t['RouteTableId']}: route to prefix list {r['DestinationPrefixListId']} not emulated"
                    )
                continue  # IPv6 routes: the plane is IPv4 only
            routes.append(_route(r, destination, vpc_id, igw_id, eni_owner, instance_owner, t["RouteTableId"], notes))
        routes.sort(key=lambda r: (-ipaddress.ip_network(r.destination).prefixlen, r.destination))
        route_tables.append(
            RouteTable(
                id=t["RouteTableId"],
                name=_tags(t).get("Name", t["RouteTableId"]),
                table=number,
                main=t["RouteTableId"] == main_table,
                routes=tuple(routes),
            )
        )

    for h in hosts:
        if not h.source_dest_check and h.setup_script is None:
            notes.append(
                f"{h.name}: source/dest check is off but its user data installs no {NAT_SETUP_PATH};"
                " nothing turns on forwarding and masquerade in the local plane"
            )
    bastion = _bastion(hosts, eip_holders)
    if bastion is None:
        notes.append("no bastion: no instance tagged kafkanet:role=nat and no single instance with a public address")
    if internet is None:
        internet = _internet(bastion and next(h for h in hosts if h.name == bastion), {g.id: g for g in groups})
    merged_topics = kafkaconf.merge_topics(topics, notes)
    return Plane(
        env=env,
        region=str(snapshot.get("region", "")),
        vpc_id=vpc_id,
        vpc_cidrs=vpc_cidrs,
        igw_id=igw_id,
        subnets=tuple(subnets),
        route_tables=tuple(route_tables),
        security_groups=tuple(groups),
        hosts=hosts,
        public_addresses=public_addresses,
        bastion=bastion,
        internet=internet,
        notes=tuple(notes),
        topics=merged_topics,
    )


def _rules(
    direction: str, permissions: list[Mapping[str, Any]], members: Mapping[str, list[str]], own: str, notes: list[str]
) -> list[SgRule]:
    rules = []
    for p in permissions:
        protocol = _protocol(p.get("IpProtocol", "-1"))
        if protocol in ("58", "icmpv6"):
            continue
        ports = (None, None) if protocol == "all" else (_port(p.get("FromPort")), _port(p.get("ToPort")))
        if protocol in ("tcp", "udp") and ports == (0, 65535):
            ports = (None, None)
        for r in p.get("IpRanges") or []:
            rules.append(SgRule(direction, protocol, *ports, r["CidrIp"], (r["CidrIp"],), r.get("Description", "")))
        for pair in p.get("UserIdGroupPairs") or []:
            gid = pair.get("GroupId", "")
            rules.append(
                SgRule(direction, protocol, *ports, gid, tuple(members.get(gid, [])), pair.get("Description", ""))
            )
        if p.get("PrefixListIds"):
            notes.append(f"{own}: {direction} rules with prefix lists are not emulated (they match nothing)")
    return rules


def _route(r, destination, vpc_id, igw_id, eni_owner, instance_owner, table_id, notes) -> Route:
    gateway = r.get("GatewayId")
    if r.get("State") == "blackhole":
        target = gateway or r.get("NetworkInterfaceId") or r.get("InstanceId") or r.get("NatGatewayId") or "?"
        return Route(destination, "blackhole", target, reason="the route's state is blackhole")
    if gateway == "local":
        return Route(destination, "local", "local")
    if gateway and gateway.startswith("igw-"):
        if gateway == igw_id:
            return Route(destination, "igw", gateway)
        return Route(
            destination, "blackhole", gateway, reason=f"internet gateway {gateway} is not attached to {vpc_id}"
        )
    eni, instance = r.get("NetworkInterfaceId"), r.get("InstanceId")
    if eni or instance:
        host = eni_owner.get(eni) if eni else instance_owner.get(instance)
        if host is None:
            return Route(destination, "blackhole", eni or instance, reason="no running instance holds the target")
        return Route(destination, "instance", eni or instance, next_hop=host.private_ip, via_host=host.name)
    target = next((r[k] for k in r if k.endswith("Id") and k not in ("DestinationPrefixListId",)), "?")
    notes.append(f"{table_id}: route {destination} -> {target} has a target the local plane does not emulate; it drops")
    return Route(destination, "blackhole", str(target), reason="target not emulated by the local plane")


def _moto_ip(address: PublicAddress | None) -> str | None:
    return address.moto_ip if address is not None and address.kind != "auto" else None


def _emulated_ip(address: PublicAddress | None) -> str | None:
    return address.emulated_ip if address is not None else None


def _bastion(hosts: tuple[Host, ...], eip_holders: set[str] | frozenset[str] = frozenset()) -> str | None:
    """The NAT (a pair's: the one holding the Elastic IP, so the active after a failover), else the one public host."""
    tagged = [h.name for h in hosts if h.role in BASTION_ROLES]
    holding = [n for n in tagged if next(h for h in hosts if h.name == n).private_ip in eip_holders]
    if holding:
        return holding[0]
    if tagged:
        return tagged[0]
    public = [h.name for h in hosts if h.public_ip]
    return public[0] if len(public) == 1 else None


def _covered(ip: ipaddress.IPv4Address, cidrs: Iterable[str]) -> bool:
    return any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs)


def _first_internet_host(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address | None:
    """The operator's address inside ``net`` and the emulated internet; computed, never enumerated
    (an admin CIDR may be as wide as 0.0.0.0/0)."""
    if INTERNET_NET.subnet_of(net):
        return INTERNET_NET.network_address + 50
    if net.subnet_of(INTERNET_NET):
        return net.network_address + 1 if net.prefixlen < 31 else net.network_address
    return None


def _covers_all_internet(net: ipaddress.IPv4Network) -> bool:
    return INTERNET_NET.subnet_of(net) and all(
        ip in net for ip in (PUBLIC_POOL.network_address + 200, PUBLIC_POOL.broadcast_address - 1)
    )


def _internet(bastion: Host | None, groups: Mapping[str, SecurityGroup]) -> Internet:
    """Operator inside an admin CIDR (the bastion's SSH sources), web and outsider outside all of them."""
    admin: list[str] = []
    if bastion is not None:
        for gid in bastion.security_groups:
            for rule in groups[gid].ingress:
                if rule.protocol in ("tcp", "all") and (
                    rule.from_port is None or rule.from_port <= 22 <= (rule.to_port or 65535)
                ):
                    admin.extend(
                        c for c in rule.peer_cidrs if ipaddress.ip_network(c, strict=False).overlaps(INTERNET_NET)
                    )
    operator = None
    for cidr in admin:
        operator = _first_internet_host(ipaddress.ip_network(cidr, strict=False))
        if operator is not None:
            break
    if operator is None:
        if bastion is None:
            operator = INTERNET_NET.network_address + 50
        else:
            raise PlaneUserError(
                f"local data plane: the bastion {bastion.name} allows SSH from no address in {INTERNET_NET};"
                f" the local operator host lives there: set admin_cidrs to e.g. {INTERNET_NET.network_address + 50}/32"
            )
    # A rule open to every emulated internet address (0.0.0.0/0 and the like) cannot be
    # stepped around: the outsider then stands where it would anyway, and gets in.
    taken = [c for c in admin if not _covers_all_internet(ipaddress.ip_network(c, strict=False))]
    free = [
        ip
        for ip in list(INTERNET_NET.hosts()) + list(PUBLIC_POOL.hosts())[200:]
        if ip != operator and not _covered(ip, taken)
    ]
    preferred_web = [ip for ip in free if int(ip) - int(INTERNET_NET.network_address) == 80]
    preferred_out = [ip for ip in free if int(ip) - int(INTERNET_NET.network_address) == 66]
    web = (preferred_web or free[:1])[0]
    outsider = (preferred_out or [ip for ip in free if ip != web][:1])[0]
    return Internet(operator_ip=str(operator), web_ip=str(web), outsider_ip=str(outsider))


def _mac(text: str | None) -> str | None:
    """A unicast MAC as EC2 reports it (lower case), or None: the kernel picks one."""
    if not text or not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", text.lower()) or int(text[:2], 16) & 1:
        return None
    return text.lower()

