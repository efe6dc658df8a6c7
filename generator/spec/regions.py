"""Regions kafkanet knows, with the Availability Zone letters each one offers.

Only what is needed to refuse an impossible spec early (an AZ letter a region
does not have) lives here. Source: AWS "Regions and Zones" documentation,
zone names as of 2025. Zones closed to new customers (us-east-1e, us-west-1b)
are left out.
"""

from __future__ import annotations

REGION_AZS: dict[str, str] = {
    "ap-northeast-1": "acd",
    "ap-northeast-2": "abcd",
    "ap-northeast-3": "abc",
    "ap-south-1": "abc",
    "ap-southeast-1": "abc",
    "ap-southeast-2": "abc",
    "ca-central-1": "abd",
    "eu-central-1": "abc",
    "eu-north-1": "abc",
    "eu-west-1": "abc",
    "eu-west-2": "abc",
    "eu-west-3": "abc",
    "sa-east-1": "abc",
    "us-east-1": "abcdf",
    "us-east-2": "abc",
    "us-west-1": "ac",
    "us-west-2": "abcd",
}


def az_letters(region: str) -> str:
    return REGION_AZS[region]
