#!/bin/bash
# A fake kernel for the NAT monitor's tests: `ping`, `sysctl`, `nft`, `ip` and
# `modprobe`, linked under each name on PATH. It answers from a world of small
# files, $KAFKANET_FAKE_WORLD/<nat>/<fact>, for the NAT named $KAFKANET_FAKE_WHO:
#
# - `ping -m MARK TARGET` stands for the monitor's HTTP probe of checkip (the
#   tests replace its `probe` with a call of this): through the tunnel it succeeds when the asker has a
#   probe tunnel to the private address of a NAT that forwards, masquerades, is
#   not hung, reaches the internet and is not partitioned from the asker: the
#   facts that decide it on a real network;
# - `ping TARGET` (unmarked) succeeds when the internet is up for the asker;
#   TARGET must be the probe name ($KAFKANET_FAKE_WORLD/target), else it fails;
# - `sysctl -n net.ipv4.ip_forward` and `nft list table ...` show the asker's own
#   forwarding and masquerade; `ip link add knprobe ... remote X` and
#   `ip link del knprobe` record the tunnel (an active's has no remote).
#
# Every call is appended to $KAFKANET_FAKE_WORLD/calls. (bash, not Python: the
# tests run thousands of these and a Python start-up costs ~100 times more.)
set -euo pipefail
world=$KAFKANET_FAKE_WORLD
who=$KAFKANET_FAKE_WHO
me=$world/$who
command=${0##*/}
echo "$who $command $*" >>"$world/calls"
fact() { cat "$1/$2"; }

case $command in
  ping)
    target=${*: -1}
    [[ $(fact "$me" internet) == 1 ]] || exit 1
    [[ $target == "$(cat "$world/target")" ]] || exit 1
    [[ " $* " == *" -m "* ]] || exit 0
    remote=$(fact "$me" tunnel_to)
    [[ -n $remote ]] || exit 1
    for far in "$world"/*/; do
      far=${far%/}
      [[ $(fact "$far" private_ip) == "$remote" && $far != "$me" ]] || continue
      grep -qx "$who" "$far/partitioned_from" && exit 1
      for healthy in forwarding masquerade internet; do
        [[ $(fact "$far" "$healthy") == 1 ]] || exit 1
      done
      [[ $(fact "$far" hung) == 0 ]] || exit 1
      exit 0
    done
    exit 1
    ;;
  sysctl)
    if [[ "$*" == "-n net.ipv4.ip_forward" ]]; then fact "$me" forwarding; fi
    ;;
  nft)
    if [[ $(fact "$me" masquerade) == 1 ]]; then
      printf 'table ip kafkanet_nat {\n  chain postrouting {\n    oifname "eth0" ip saddr 10.0.0.0/16 masquerade\n  }\n}\n'
    else
      printf 'table ip kafkanet_nat {\n  chain postrouting {\n  }\n}\n'
    fi
    ;;
  ip)
    if [[ $1 == link && $2 == add ]]; then
      args=("$@")
      for i in "${!args[@]}"; do
        if [[ ${args[$i]} == remote ]]; then echo "${args[$((i + 1))]}" >"$me/tunnel_to"; fi
      done
    elif [[ $1 == link && $2 == del ]]; then
      : >"$me/tunnel_to"
    fi
    ;;
esac
exit 0
