# One-off, for a module generated before the NAT security group's rules became
# resources of their own. Those rules exist in AWS already, inside the group,
# so creating them again fails (InvalidPermission.Duplicate). This file adopts
# each of them into the resource the module now declares for it, by its
# security group rule id. Copy it into the build directory, run `terraform
# apply` once (Terraform >= 1.7: import blocks with for_each), then delete it.

data "aws_vpc_security_group_rules" "nat_upgrade" {
  filter {
    name   = "group-id"
    values = [aws_security_group.nat.id]
  }
}

data "aws_vpc_security_group_rule" "nat_upgrade" {
  for_each = toset(data.aws_vpc_security_group_rules.nat_upgrade.ids)

  security_group_rule_id = each.value
}

locals {
  nat_upgrade_rules   = values(data.aws_vpc_security_group_rule.nat_upgrade)
  nat_upgrade_private = { for key, subnet in local.private_subnets : subnet.cidr => key }
}

import {
  for_each = {
    for r in local.nat_upgrade_rules : r.cidr_ipv4 => r.security_group_rule_id
    if !r.is_egress && r.ip_protocol == "tcp" && r.from_port == 22 && r.to_port == 22
  }
  to = aws_vpc_security_group_ingress_rule.nat_ssh[each.key]
  id = each.value
}

import {
  for_each = {
    for r in local.nat_upgrade_rules : local.nat_upgrade_private[r.cidr_ipv4] => r.security_group_rule_id
    if !r.is_egress && r.ip_protocol == "tcp" && r.from_port == 0 && r.to_port == 65535 && contains(keys(local.nat_upgrade_private), coalesce(r.cidr_ipv4, "-"))
  }
  to = aws_vpc_security_group_ingress_rule.nat_tcp_from_private[each.key]
  id = each.value
}

import {
  for_each = {
    for r in local.nat_upgrade_rules : local.nat_upgrade_private[r.cidr_ipv4] => r.security_group_rule_id
    if !r.is_egress && r.ip_protocol == "icmp" && contains(keys(local.nat_upgrade_private), coalesce(r.cidr_ipv4, "-"))
  }
  to = aws_vpc_security_group_ingress_rule.nat_icmp_from_private[each.key]
  id = each.value
}

import {
  to = aws_vpc_security_group_egress_rule.nat_anywhere
  id = one([for r in local.nat_upgrade_rules : r.security_group_rule_id if r.is_egress && r.ip_protocol == "-1" && r.cidr_ipv4 == "0.0.0.0/0"])
}
