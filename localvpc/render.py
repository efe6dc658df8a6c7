"""The plane's namespaces and links by name, and what each namespace is configured with. Pure.

Owns the naming (the environment name's rule, the ``kn_E_`` namespace prefix,
the hashed veth prefix), the :class:`Layout` of one environment's namespaces and
veths, and the rendering of each namespace's configuration as an
:class:`NsConfig` (sysctls, ``ip -batch`` lines, nftables ruleset): the VPC
router with its route tables and security-group chains, the internet gateway's
1:1 NAT, the emulated internet and its hosts, and every instance. No I/O: the
same plane and environment name always give the same text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from localvpc import model
from localvpc.errors import PlaneUserError
from localvpc.model import Host, Plane, SgRule

ENV_RE = re.compile(r"^[a-z][a-z0-9-]{1,20}$")

# Point-to-point links between the routers (link-local, never on the wire).
ROUTER_IGW = ("169.254.0.1", "169.254.0.2")  # router side, igw side (/30)
IGW_INET = ("169.254.1.2", "169.254.1.1")  # igw side, internet side (/30)
INET_GATEWAY = "169.254.0.1"  # internet router's address towards its hosts


# --- names -----------------------------------------------------------------


def check_env_name(env: str) -> None:
    if not ENV_RE.match(env or ""):
        raise PlaneUserError(f"local data plane: environment name {env!r} must match {ENV_RE.pattern}")


def netns_prefix(env: str) -> str:
    return f"kn_{env}_"


def link_prefix(env: str) -> str:
    """``k`` + 6 hex digits of the env name's hash: every veth name starts with it (<= 11 chars)."""
    return "k" + hashlib.sha256(env.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Layout:
    """Every name the plane of one environment uses."""

    env: str
    router: str
    igw: str
    internet: str
    operator: str
    web: str
    outsider: str
    host_ns: dict[str, str]  # host name -> netns
    host_if: dict[str, tuple[str, str]]  # host name -> (instance side, router side)
    router_igw: tuple[str, str]  # (router side, igw side)
    igw_inet: tuple[str, str]  # (igw side, internet side)
    inet_hosts: dict[str, tuple[str, str]]  # "operator"... -> (host side, internet side)

    @property
    def namespaces(self) -> list[str]:
        return [self.router, self.igw, self.internet, self.operator, self.web, self.outsider, *self.host_ns.values()]


def layout(env: str, plane: Plane) -> Layout:
    p, k = netns_prefix(env), link_prefix(env)
    return Layout(
        env=env,
        router=f"{p}router",
        igw=f"{p}igw",
        internet=f"{p}internet",
        operator=f"{p}operator",
        web=f"{p}web",
        outsider=f"{p}outsider",
        host_ns={h.name: f"{p}{h.name}" for h in plane.hosts},
        host_if={h.name: (f"{k}h{i}", f"{k}r{i}") for i, h in enumerate(plane.hosts)},
        router_igw=(f"{k}vg", f"{k}gv"),
        igw_inet=(f"{k}gi", f"{k}ig"),
        inet_hosts={role: (f"{k}{c}i", f"{k}i{c}") for role, c in (("operator", "o"), ("web", "w"), ("outsider", "x"))},
    )


# --- rendering (pure) --------------------------------------------------------


@dataclass(frozen=True)
class NsConfig:
    """What one namespace gets: sysctls, an ``ip -batch`` and an nftables ruleset."""

    sysctls: tuple[tuple[str, str], ...]
    ip_batch: tuple[str, ...]
    late_sysctls: tuple[tuple[str, str], ...] = ()  # per-interface, after the links are up
    nft: str = ""

    def script(self) -> str:
        lines = ["set -e"]
        lines += [f"echo {v} > /proc/sys/{k}" for k, v in self.sysctls]
        lines += ["ip -batch - <<'KN_EOF'", *self.ip_batch, "KN_EOF"]
        lines += [f"echo {v} > /proc/sys/{k}" for k, v in self.late_sysctls]
        if self.nft:
            lines += ["nft -f - <<'KN_EOF'", self.nft.rstrip("\n"), "KN_EOF"]
        return "\n".join(lines) + "\n"


ROUTER_SYSCTLS = (
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/icmp_ratelimit", "0"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
    ("net/ipv4/conf/all/accept_redirects", "0"),
)


def _nft_comment(text: str) -> str:
    return '"' + re.sub(r'["\\]', "'", text)[:120] + '"'


def rule_match(rule: SgRule) -> str | None:
    """The nftables match of one security-group rule (None: it matches nothing)."""
    if not rule.peer_cidrs:
        return None
    parts = []
    if tuple(rule.peer_cidrs) != ("0.0.0.0/0",):
        key = "saddr" if rule.direction == "ingress" else "daddr"
        parts.append(f"ip {key} {{ {', '.join(rule.peer_cidrs)} }}")
    proto = rule.protocol
    if proto in ("tcp", "udp"):
        if rule.from_port is None:
            parts.append(f"meta l4proto {proto}")
        elif rule.to_port is None or rule.to_port == rule.from_port:
            parts.append(f"{proto} dport {rule.from_port}")
        else:
            parts.append(f"{proto} dport {rule.from_port}-{rule.to_port}")
    elif proto == "icmp":
        if rule.from_port is None:
            parts.append("meta l4proto icmp")
        else:
            parts.append(f"icmp type {rule.from_port}")
            if rule.to_port is not None:
                parts.append(f"icmp code {rule.to_port}")
    elif proto != "all":
        parts.append(f"meta l4proto {int(proto)}")
    return " ".join(parts)


def _rule_text(group_id: str, rule: SgRule) -> str:
    ports = (
        ""
        if rule.from_port is None
        else f" {rule.from_port}" + ("" if rule.to_port in (None, rule.from_port) else f"-{rule.to_port}")
    )
    way = "from" if rule.direction == "ingress" else "to"
    return f"{group_id}: {rule.protocol}{ports} {way} {rule.peer}"


STOPPED_SET = "stopped_hosts"  # router veths of instances that are not running: everything through them drops


def _host_pref(lay: Layout, name: str) -> int:
    """Priority of the host's ``ip rule``: fixed by the layout, whatever later runs or stops."""
    return 1000 + list(lay.host_if).index(name)


def router_rules(plane: Plane, lay: Layout) -> dict[str, str]:
    """Router veth -> its ``ip rule`` (the route table of the host's subnet)."""
    rules = {}
    for host in plane.hosts:
        rif = lay.host_if[host.name][1]
        rules[rif] = f"iif {rif} lookup {plane.route_table_of(host).table} pref {_host_pref(lay, host.name)}"
    return rules


def router_routes(plane: Plane, lay: Layout) -> dict[tuple[int, str], str]:
    """``(kernel table, destination)`` -> the route's ``ip route`` arguments, for every route table."""
    rv = lay.router_igw[0]
    routes = {}
    for table in plane.route_tables:
        for route in table.routes:
            if route.kind == "local":
                spec = f"throw {route.destination}"
            elif route.kind == "igw":
                spec = f"{route.destination} via {ROUTER_IGW[1]} dev {rv}"
            elif route.kind == "instance":
                rif = lay.host_if[route.via_host][1]  # type: ignore[index]
                spec = f"{route.destination} via {route.next_hop} dev {rif} onlink"
            else:
                spec = f"blackhole {route.destination}"
            routes[(table.table, route.destination)] = f"{spec} table {table.table}"
    return routes


def render_router(plane: Plane, lay: Layout) -> NsConfig:
    batch = ["link set lo up"]
    late: list[tuple[str, str]] = []
    rules = router_rules(plane, lay)
    for host in plane.hosts:
        _, rif = lay.host_if[host.name]
        batch += [
            f"addr add {host.gateway}/32 dev {rif}",
            f"link set {rif} up",
            f"route add {host.private_ip}/32 dev {rif} src {host.gateway}",
            f"rule add {rules[rif]}",
        ]
        late += [(f"net/ipv4/conf/{rif}/proxy_arp", "1"), (f"net/ipv4/conf/{rif}/send_redirects", "0"), _no_ipv6(rif)]
    rv, _ = lay.router_igw
    if plane.igw_id:
        batch += [f"addr add {ROUTER_IGW[0]}/30 dev {rv}", f"link set {rv} up"]
        late.append(_no_ipv6(rv))
    for cidr in plane.vpc_cidrs:
        batch.append(f"route add blackhole {cidr}")
    batch.append("route add blackhole default")
    batch += [f"route add {spec}" for spec in router_routes(plane, lay).values()]
    return NsConfig(ROUTER_SYSCTLS, tuple(batch), tuple(late), render_router_nft(plane, lay))


def router_chain_name(direction: str, host: Host) -> str:
    return f"{direction}_{_chain(host)}"


def router_host_chains(plane: Plane, lay: Layout) -> dict[str, tuple[str, ...]]:  # noqa: ARG001 (same signature as the rest)
    """Chain name -> its rules: each host's security groups and source/dest check, both ways."""
    chains = {}
    for host in plane.hosts:
        for direction in ("egress", "ingress"):
            rules = [f"# {host.name} {host.instance_id} {host.private_ip}"]
            if host.source_dest_check:
                key = "saddr" if direction == "egress" else "daddr"
                rules.append(f'ip {key} != {host.private_ip} drop comment "source/dest check"')
            verdict = "return" if direction == "egress" else "accept"
            for gid in host.security_groups:
                group = plane.group(gid)
                for rule in group.egress if direction == "egress" else group.ingress:
                    match = rule_match(rule)
                    comment = _nft_comment(_rule_text(gid, rule))
                    if match is None:
                        rules.append(f"# {comment[1:-1]} (no members)")
                    else:
                        rules.append(f"{match} {verdict} comment {comment}")
            rules.append("drop")
            chains[router_chain_name(direction, host)] = tuple(rules)
    return chains


def render_router_nft(plane: Plane, lay: Layout, index: dict[str, int] | None = None) -> str:  # noqa: ARG001
    """Security groups and source/dest check as stateful chains of the VPC router."""
    out = [
        "table ip kafkanet {",
        f"    set {STOPPED_SET} {{",
        "        type ifname",
        "    }",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        "        ct state established,related accept",
        "    }",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        f"        iifname @{STOPPED_SET} drop",
        f"        oifname @{STOPPED_SET} drop",
        "        ct state established,related accept",
        "        ct state invalid drop",
    ]
    if plane.hosts:
        egress = ", ".join(f'"{lay.host_if[h.name][1]}" : jump egress_{_chain(h)}' for h in plane.hosts)
        out.append(f"        iifname vmap {{ {egress} }}")
        ingress = [f'"{lay.host_if[h.name][1]}" : jump ingress_{_chain(h)}' for h in plane.hosts]
        if plane.igw_id:
            ingress.append(f'"{lay.router_igw[0]}" : accept')
        out.append(f"        oifname vmap {{ {', '.join(ingress)} }}")
    out.append("    }")
    for name, rules in router_host_chains(plane, lay).items():
        out.append(f"    chain {name} {{")
        out += [f"        {rule}" for rule in rules]
        out.append("    }")
    out.append("}")
    return "\n".join(out) + "\n"


def _no_ipv6(ifname: str) -> tuple[str, str]:
    """The plane is IPv4 only, like the VPC: no link-local IPv6 chatter on its links."""
    return (f"net/ipv6/conf/{ifname}/disable_ipv6", "1")


def _chain(host: Host) -> str:
    return chain_suffix(host.name)


def chain_suffix(name: str) -> str:
    """A host name as it ends the names of its router chains."""
    return re.sub(r"[^a-z0-9]", "_", name)


def igw_maps(plane: Plane) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The internet gateway's 1:1 NAT: public -> private, private -> public, and who has a public address."""
    inbound = {p.emulated_ip: p.private_ip for p in plane.public_addresses if p.private_ip}
    outbound = {h.private_ip: h.public_ip for h in plane.hosts if h.public_ip}
    return inbound, outbound, sorted(set(inbound.values()) | set(outbound))


def render_igw(plane: Plane, lay: Layout) -> NsConfig:
    gv = lay.router_igw[1]
    gi, _ = lay.igw_inet
    batch = [
        "link set lo up",
        f"addr add {ROUTER_IGW[1]}/30 dev {gv}",
        f"link set {gv} up",
        f"addr add {IGW_INET[0]}/30 dev {gi}",
        f"link set {gi} up",
        f"route add default via {IGW_INET[1]} dev {gi}",
        f"route add blackhole {model.PUBLIC_POOL}",
    ]
    batch += [f"route add {cidr} via {ROUTER_IGW[0]} dev {gv}" for cidr in plane.vpc_cidrs]
    inbound, outbound, with_public = igw_maps(plane)
    nft = [
        "table ip kafkanet {",
        "    map public_to_private {",
        "        type ipv4_addr : ipv4_addr",
        *([f"        elements = {{ {', '.join(f'{k} : {v}' for k, v in inbound.items())} }}"] if inbound else []),
        "    }",
        "    map private_to_public {",
        "        type ipv4_addr : ipv4_addr",
        *([f"        elements = {{ {', '.join(f'{k} : {v}' for k, v in outbound.items())} }}"] if outbound else []),
        "    }",
        "    set with_public {",
        "        type ipv4_addr",
        *([f"        elements = {{ {', '.join(with_public)} }}"] if with_public else []),
        "    }",
    ]
    nft += [
        "    chain prerouting {",
        "        type nat hook prerouting priority dstnat; policy accept;",
        f'        iifname "{gi}" dnat to ip daddr map @public_to_private',
        "    }",
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
        f'        oifname "{gi}" snat to ip saddr map @private_to_public',
        "    }",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        "        ct state established,related accept",
        f'        iifname "{gv}" oifname "{gi}" ip saddr @with_public accept',
        f'        iifname "{gi}" oifname "{gv}" ip daddr @with_public accept',
        "    }",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        "    }",
        "}",
    ]
    return NsConfig(ROUTER_SYSCTLS, tuple(batch), (_no_ipv6(gv), _no_ipv6(gi)), "\n".join(nft) + "\n")


def render_internet(plane: Plane, lay: Layout) -> NsConfig:
    ig = lay.igw_inet[1]
    batch = [
        "link set lo up",
        f"addr add {IGW_INET[1]}/30 dev {ig}",
        f"link set {ig} up",
        f"route add {model.PUBLIC_POOL} via {IGW_INET[0]} dev {ig}",
    ]
    for role, ip in _inet_ips(plane).items():
        _, iif = lay.inet_hosts[role]
        batch += [
            f"addr add {INET_GATEWAY}/32 dev {iif}",
            f"link set {iif} up",
            f"route add {ip}/32 dev {iif} src {INET_GATEWAY}",
        ]
    late = (_no_ipv6(ig), *(_no_ipv6(lay.inet_hosts[role][1]) for role in _inet_ips(plane)))
    return NsConfig(ROUTER_SYSCTLS, tuple(batch), late)


def _inet_ips(plane: Plane) -> dict[str, str]:
    i = plane.internet
    return {"operator": i.operator_ip, "web": i.web_ip, "outsider": i.outsider_ip}


def render_inet_host(ip: str, ifname: str) -> NsConfig:
    return NsConfig(
        (),
        (
            "link set lo up",
            f"addr add {ip}/32 dev {ifname}",
            f"link set {ifname} up",
            f"route add default via {INET_GATEWAY} dev {ifname} onlink",
        ),
        (_no_ipv6(ifname),),
    )


def render_instance(host: Host, ifname: str) -> NsConfig:
    return NsConfig(
        (),
        (
            "link set lo up",
            f"addr add {host.private_ip}/{host.prefix_len} dev {ifname}",
            f"link set {ifname} up",
            f"route add default via {host.gateway} dev {ifname}",
        ),
        (_no_ipv6(ifname),),
    )


def render_links(plane: Plane, lay: Layout) -> list[str]:
    """``ip -batch`` lines run in the root namespace: create namespaces and veths *inside* them."""
    lines = [f"netns add {ns}" for ns in lay.namespaces]
    for host in plane.hosts:
        hif, rif = lay.host_if[host.name]
        lines.append(f"link add {hif} netns {lay.host_ns[host.name]} type veth peer name {rif} netns {lay.router}")
    if plane.igw_id:
        rv, gv = lay.router_igw
        lines.append(f"link add {rv} netns {lay.router} type veth peer name {gv} netns {lay.igw}")
    gi, ig = lay.igw_inet
    lines.append(f"link add {gi} netns {lay.igw} type veth peer name {ig} netns {lay.internet}")
    for role, (hif, iif) in lay.inet_hosts.items():
        lines.append(f"link add {hif} netns {getattr(lay, role)} type veth peer name {iif} netns {lay.internet}")
    return lines


def ns_configs(plane: Plane, lay: Layout) -> dict[str, NsConfig]:
    configs = {
        lay.router: render_router(plane, lay),
        lay.igw: render_igw(plane, lay),
        lay.internet: render_internet(plane, lay),
    }
    for role, ip in _inet_ips(plane).items():
        configs[getattr(lay, role)] = render_inet_host(ip, lay.inet_hosts[role][0])
    for host in plane.hosts:
        configs[lay.host_ns[host.name]] = render_instance(host, lay.host_if[host.name][0])
    return configs
