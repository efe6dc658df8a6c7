"""`kafkanet cost`: the arithmetic against figures worked out by hand, the outputs, every error.

Every expected figure below is computed by hand from generator/module/prices.yaml (the
arithmetic is in the comments) and written as a literal: none is re-derived by
the code under test. 730 hours a month throughout.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from generator.base.errors import UserError
from generator.cli import main
from generator.module.cost import (
    BROKER_ROOT_GB,
    NAT_ROOT_GB,
    VOLUME_TYPE,
    CostReport,
    estimate,
)
from generator.module.generate import render_for
from generator.module.loaded import load
from generator.module.prices import PRICES_FILE, load_prices
from tests.conftest import ROOT, SEED, SEED_TEXT, SPECS

VIRGINIA = SPECS / "virginia-five.yaml"
REPO_SPECS = sorted((ROOT / "environments").glob("*.yaml")) + sorted(SPECS.glob("*.yaml"))
CENT = Decimal("0.01")


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT)


def _summary(report: CostReport) -> list[tuple[Decimal, Decimal, Decimal]]:
    """(network, total, saving) per option, in cents."""
    return [(_cents(o.network), _cents(report.total(o)), _cents(report.saving(o))) for o in report.options]


# ------------------------------------------------------------ the arithmetic


def test_seed_lines_by_hand():
    # Seoul (ap-northeast-2), 100 GB/month; NAT t3.micro in a, 3 × t3.small in b, c, d.
    report = estimate(load(SEED), 100)
    assert [(line.item, line.monthly) for line in report.shared] == [
        ("brokers: 3 × t3.small", Decimal("56.94")),  # 3 × 730 h = 2190 h × 0.026
        ("broker root volumes: 3 × 16 GB gp3", Decimal("4.3776")),  # 48 GB × 0.0912
        ("broker data volumes: 3 × 20 GB gp3", Decimal("5.472")),  # 60 GB × 0.0912
        ("internet egress", Decimal("12.6")),  # 100 GB × 0.126
    ]
    instance, single, per_az, pair = report.options
    assert [line.monthly for line in instance.lines] == [
        Decimal("9.49"),  # 730 h × 0.013
        Decimal("0.7296"),  # 8 GB × 0.0912
        Decimal("3.65"),  # EIP: 730 h × 0.005
        Decimal("2.00"),  # all 3 brokers are outside a: 100 GB cross, × 2 directions × 0.01
    ]
    assert [line.monthly for line in single.lines] == [
        Decimal("43.07"),  # 730 h × 0.059
        Decimal("5.9"),  # 100 GB × 0.059
        Decimal("3.65"),  # 730 h × 0.005
        Decimal("2.00"),  # the same cross-AZ transfer
    ]
    assert [line.monthly for line in per_az.lines] == [
        Decimal("129.21"),  # 3 gateways × 730 h = 2190 h × 0.059
        Decimal("5.9"),  # 100 GB × 0.059
        Decimal("10.95"),  # 3 addresses × 730 h = 2190 h × 0.005
    ]
    assert [line.monthly for line in pair.lines] == [
        Decimal("18.98"),  # 2 instances × 730 h = 1460 h × 0.013
        Decimal("1.4592"),  # 16 GB × 0.0912
        Decimal("7.30"),  # the EIP and the standby's address: 1460 h × 0.005
        Decimal("2.00"),  # brokers cross to the active exactly as to one NAT
    ]
    assert instance.network == Decimal("15.8696")  # 9.49 + 0.7296 + 3.65 + 2.00
    assert report.shared_total == Decimal("79.3896")  # 56.94 + 4.3776 + 5.472 + 12.6


@pytest.mark.parametrize(
    "egress,expected",
    [
        # shared = brokers 66.7896 (56.94 + 4.3776 + 5.472) + egress × 0.126
        # A = 9.49 (730 h × 0.013) + 0.7296 + 3.65 + egress × 0.02;  B = 43.07 + 3.65 + egress × (0.059 + 0.02)
        # C = 129.21 + 10.95 + egress × 0.059
        # D (the pair) = 2 × (9.49 + 0.7296 + 3.65) + egress × 0.02
        (
            100,  # the default; shared 79.3896
            [
                (Decimal("15.87"), Decimal("95.26"), Decimal("0.00")),  # 15.8696; + 79.3896 = 95.2592
                (Decimal("54.62"), Decimal("134.01"), Decimal("38.75")),  # 54.62; 134.0096; - 95.2592 = 38.7504
                (Decimal("146.06"), Decimal("225.45"), Decimal("130.19")),  # 146.06; 225.4496; - 95.2592 = 130.1904
                (Decimal("29.74"), Decimal("109.13"), Decimal("13.87")),  # 29.7392; 109.1288; - 95.2592 = 13.8696
            ],
        ),
        (
            0,  # shared 66.7896
            [
                (Decimal("13.87"), Decimal("80.66"), Decimal("0.00")),  # 13.8696; + 66.7896 = 80.6592
                (Decimal("46.72"), Decimal("113.51"), Decimal("32.85")),  # 46.72; 113.5096; - 80.6592 = 32.8504
                (Decimal("140.16"), Decimal("206.95"), Decimal("126.29")),  # 140.16; 206.9496; - 80.6592 = 126.2904
                (Decimal("27.74"), Decimal("94.53"), Decimal("13.87")),  # 2 × 13.8696 = 27.7392; 94.5288; 13.8696
            ],
        ),
        (
            1000,  # shared 66.7896 + 126 = 192.7896
            [
                (Decimal("33.87"), Decimal("226.66"), Decimal("0.00")),  # 13.8696 + 20 = 33.8696; 226.6592
                (Decimal("125.72"), Decimal("318.51"), Decimal("91.85")),  # 46.72 + 59 + 20; 318.5096; 91.8504
                (Decimal("199.16"), Decimal("391.95"), Decimal("165.29")),  # 140.16 + 59; 391.9496; 165.2904
                (Decimal("47.74"), Decimal("240.53"), Decimal("13.87")),  # 27.7392 + 20; 240.5288; 13.8696
            ],
        ),
    ],
    ids=["egress-100", "egress-0", "egress-1000"],
)
def test_seed_totals_by_hand(egress, expected):
    assert _summary(estimate(load(SEED), egress)) == expected


def test_other_region_by_hand():
    # N. Virginia (us-east-1), 100 GB/month; NAT t3.nano in f, 5 × m5.large (100 GB data) in a, b, c.
    # shared: 5 × 730 h = 3650 h × 0.096 = 350.40; root 80 GB × 0.08 = 6.40;
    #         data 500 GB × 0.08 = 40.00; egress 100 GB × 0.09 = 9.00; total 405.80
    # A: 730 × 0.0052 = 3.796 + 8 × 0.08 = 0.64 + 3.65 + 200 GB × 0.01 = 2.00 -> 10.086; total 415.886
    # B: 730 × 0.045 = 32.85 + 100 × 0.045 = 4.50 + 3.65 + 2.00 -> 43.00; total 448.80; saves 32.914
    # C: 2190 × 0.045 = 98.55 + 4.50 + 2190 × 0.005 = 10.95 -> 114.00; total 519.80; saves 103.914
    # D: 2 × 3.796 = 7.592 + 1.28 + 7.30 + 2.00 -> 18.172; total 423.972; saves 8.086
    report = estimate(load(VIRGINIA))
    assert report.region == "us-east-1" and report.egress_gb == 100
    assert report.shared_total == Decimal("405.80")
    assert report.options[0].network == Decimal("10.086")
    assert _summary(report) == [
        (Decimal("10.09"), Decimal("415.89"), Decimal("0.00")),
        (Decimal("43.00"), Decimal("448.80"), Decimal("32.91")),
        (Decimal("114.00"), Decimal("519.80"), Decimal("103.91")),
        (Decimal("18.17"), Decimal("423.97"), Decimal("8.09")),
    ]


def test_only_brokers_outside_the_nat_az_cross(write_spec):
    # Seoul, NAT in a, brokers in a, b, c: 2 of 3 brokers send 2/3 of the egress across.
    path = write_spec(SEED_TEXT.replace("azs: [b, c, d]", "azs: [a, b, c]"))
    at_90 = estimate(load(path), 90).options[0].lines[-1]
    assert at_90.quantity == Decimal("120")  # 90 × 2/3 = 60 GB crossing, charged out and in
    assert at_90.monthly == Decimal("1.20")  # 120 × 0.01
    # 100 GB: 66.666... GB crossing, 133.33... GB charged, 1.3333...; kept exact until shown:
    # A = 9.49 + 0.7296 + 3.65 + 1.3333... = 15.2029333...; total + 79.3896 = 94.5925333...
    report = estimate(load(path), 100)
    assert _cents(report.options[0].network) == Decimal("15.20")
    assert _cents(report.total(report.options[0])) == Decimal("94.59")


def test_no_cross_az_when_nat_and_broker_share_an_az():
    # ireland-one: NAT and its single broker both in eu-west-1b
    report = estimate(load(SPECS / "ireland-one.yaml"), 100)
    assert report.options[0].lines[-1].monthly == 0
    assert len(report.options[2].lines) == 3  # per-AZ gateways: hours, processing, IPv4; no transfer line


def test_fractional_egress_is_kept_exact():
    # 12.5 GB: egress 12.5 × 0.126 = 1.575 exactly (a float would not keep it)
    report = estimate(load(SEED), "12.5")
    assert report.shared[-1].monthly == Decimal("1.575")


# ------------------------------------------------------------------ outputs


def test_table_shows_lines_totals_savings_and_assumptions(capsys):
    assert main(["cost", "ttareungyi"]) == 0  # default egress: 100 GB
    out = capsys.readouterr().out
    assert "ttareungyi in ap-northeast-2: monthly cost in USD, 100 GB/month" in out
    for row in (
        r"brokers: 3 × t3\.small\s+0\.026/hour\s+2190 hours\s+56\.94",
        r"NAT instance t3\.micro\s+0\.013/hour\s+730 hours\s+9\.49",
        r"NAT root volume: 8 GB gp3\s+0\.0912/GB-month\s+8 GB-month\s+0\.73",
        r"cross-AZ transfer: 100 GB, out and in\s+0\.01/GB\s+200 GB\s+2\.00",
        r"NAT Gateway processing of the egress\s+0\.059/GB\s+100 GB\s+5\.90",
        r"NAT Gateways: 3\s+0\.059/hour\s+2190 hours\s+129\.21",
        r"A\. NAT instance \(as generated\)\s+15\.87\s+95\.26\s+-",
        r"B\. one NAT Gateway\s+54\.62\s+134\.01\s+38\.75",
        r"C\. NAT Gateway per broker AZ \(3\)\s+146\.06\s+225\.45\s+130\.19",
    ):
        assert re.search(row, out), row
    assert "730 hours a month" in out and "include no bastion" in out and "split evenly" in out
    assert "Prices: generator/module/prices.yaml, transcribed" in out


def test_json_has_every_line_with_its_price_source(capsys):
    assert main(["cost", "ttareungyi", "--egress-gb", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"environment", "region", "currency", "hours_per_month", "egress_gb", "prices_file",
                        "shared", "options", "assumptions"}
    assert (doc["environment"], doc["region"], doc["hours_per_month"], doc["egress_gb"]) == (
        "ttareungyi", "ap-northeast-2", 730, 0)
    assert doc["shared"]["monthly_usd"] == 66.79  # 66.7896
    assert [(o["key"], o["network_usd"], o["total_usd"], o["nat_instance_saves_usd"]) for o in doc["options"]] == [
        ("nat_instance", 13.87, 80.66, 0.0),  # 9.49 + 0.7296 + 3.65 = 13.8696; + 66.7896 = 80.6592
        ("nat_gateway", 46.72, 113.51, 32.85),  # 113.5096 - 80.6592 = 32.8504
        ("nat_gateway_per_az", 140.16, 206.95, 126.29),  # 206.9496 - 80.6592 = 126.2904
        ("nat_pair", 27.74, 94.53, 13.87),  # 2 × 13.8696 = 27.7392; 94.5288 - 80.6592 = 13.8696
    ]
    lines = doc["shared"]["lines"] + [line for o in doc["options"] for line in o["lines"]]
    assert len(lines) == 4 + 4 + 4 + 3 + 4
    for line in lines:
        assert set(line) == {"kind", "item", "unit_price_usd", "unit", "quantity", "monthly_usd",
                             "price_key", "as_of", "source"}
        assert line["price_key"].startswith("regions.ap-northeast-2.")
        assert date.fromisoformat(line["as_of"]) and line["source"].startswith("https://aws.amazon.com/")
    gateway = doc["options"][1]["lines"][0]
    assert (gateway["unit_price_usd"], gateway["unit"], gateway["quantity"], gateway["monthly_usd"]) == (
        0.059, "hour", 730, 43.07)
    assert any("no bastion" in a for a in doc["assumptions"])


def test_markdown_for_the_generated_readme():
    md = estimate(load(SEED), 100).markdown()
    assert md.startswith(
        "| ttareungyi (ap-northeast-2), USD/month | NAT instance (as generated) | one NAT Gateway "
        "| NAT Gateway per broker AZ (3) | NAT pair (hot standby) |\n|---|---:|---:|---:|---:|\n"
    )
    assert "| NAT Gateway data processing | – | 5.90 | 5.90 | – |" in md
    assert "| cross-AZ transfer to the NAT | 2.00 | 2.00 | – | 2.00 |" in md
    assert "| **environment total** | **95.26** | **134.01** | **225.45** | **109.13** |" in md
    assert "| NAT instance saves | – | 38.75 | 130.19 | 13.87 |" in md


# ------------------------------------------------------------ the price book


def _figures(node, key="regions"):
    """Every {usd, as_of, source} leaf of the raw price book, with its key."""
    if isinstance(node, dict) and "usd" in node:
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _figures(v, f"{key}.{k}")


def test_every_figure_has_a_date_and_a_pricing_page():
    raw = yaml.safe_load(PRICES_FILE.read_text())
    figures = list(_figures(raw["regions"]))
    assert len(figures) >= 5 * 12  # five regions: 6 instance types, gp3 and 5 single figures each
    for key, figure in figures:
        assert set(figure) == {"usd", "as_of", "source"}, key
        assert isinstance(figure["as_of"], date), key
        assert figure["source"].startswith("https://aws.amazon.com/"), key
    assert "TRANSCRIBED, NOT FETCHED" in PRICES_FILE.read_text()


def test_seoul_nat_gateway_is_the_published_figure():
    book = load_prices()
    assert book.price("ap-northeast-2", "nat_gateway_hourly").usd == Decimal("0.059")
    assert book.price("ap-northeast-2", "nat_gateway_gb").usd == Decimal("0.059")


@pytest.mark.parametrize("spec", REPO_SPECS, ids=lambda p: p.stem)
def test_price_book_covers_every_spec_in_the_repository(spec):
    loaded = load(spec)
    report = estimate(loaded, 100)  # raises on any region, instance type or figure missing
    assert report.region == loaded.spec.region
    assert {line.price.key for line in report.shared[:1] + report.options[0].lines[:1]} == {
        f"regions.{loaded.spec.region}.ec2_hourly.{loaded.spec.brokers.instance_type}",
        f"regions.{loaded.spec.region}.ec2_hourly.{loaded.spec.nat.instance_type}",
    }


def _block(text: str, opening: str) -> dict[str, str]:
    """`key = value` pairs of the first block opening with `opening` in rendered HCL."""
    body = re.search(re.escape(opening) + r" \{\n(.*?)\n\s*\}", text, re.S)
    assert body, opening
    return dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", body.group(1), re.M))


def test_volumes_priced_are_the_volumes_the_templates_provision():
    files = render_for(load(SEED), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P t")
    nat, kafka = files["nat.tf"], files["kafka.tf"]
    assert _block(nat, "root_block_device") == {
        "volume_type": f'"{VOLUME_TYPE}"', "volume_size": str(NAT_ROOT_GB), "encrypted": "true"}
    assert _block(kafka, "root_block_device") == {
        "volume_type": f'"{VOLUME_TYPE}"', "volume_size": str(BROKER_ROOT_GB), "encrypted": "true"}
    data = _block(kafka, 'resource "aws_ebs_volume" "kafka_data"')
    assert (data["type"], data["size"]) == (f'"{VOLUME_TYPE}"', "20")
    # nothing above the gp3 baseline is provisioned, so nothing else is priced
    assert not re.search(r"^\s*(iops|throughput)\s*=", nat + kafka, re.M)


# -------------------------------------------------------------------- errors


def _fails(capsys, *argv: str) -> str:
    """Run `kafkanet cost ...`: exit 2, nothing on stdout, one error line; return it."""
    assert main(["cost", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kafkanet: error: ")
    return lines[0]


def _figure(usd: float) -> dict:
    return {"usd": usd, "as_of": date(2025, 1, 1), "source": "https://aws.amazon.com/vpc/pricing/"}


def _region(**drop_or_replace) -> dict:
    """A complete price region (round figures), with items dropped (None) or replaced."""
    region = {
        "ec2_hourly": {"t3.micro": _figure(0.01), "t3.small": _figure(0.02)},
        "ebs_gb_month": {"gp3": _figure(0.1)},
        "public_ipv4_hourly": _figure(0.005),
        "nat_gateway_hourly": _figure(0.05),
        "nat_gateway_gb": _figure(0.05),
        "cross_az_gb": _figure(0.01),
        "internet_egress_gb": _figure(0.1),
    }
    region.update(drop_or_replace)
    return {k: v for k, v in region.items() if v is not None}


def _book(tmp_path: Path, **regions: dict) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump({"regions": {k.replace("_", "-"): v for k, v in regions.items()}}))
    return path


def test_injected_price_book_is_used(tmp_path):
    # round figures: A = 730 × 0.01 + 8 × 0.1 + 730 × 0.005 + 200 GB × 0.01 = 7.30 + 0.80 + 3.65 + 2.00
    report = estimate(load(SEED), 100, load_prices(_book(tmp_path, ap_northeast_2=_region())))
    assert report.options[0].network == Decimal("13.75")


def test_unknown_region_in_an_injected_price_book(tmp_path, capsys):
    book = _book(tmp_path, us_east_1=_region())
    line = _fails(capsys, "ttareungyi", "--prices", str(book))
    assert line == (
        f"kafkanet: error: no prices for region ap-northeast-2: add regions.ap-northeast-2 "
        f"(usd, as_of and source per figure) to {book}"
    )


def test_region_the_shipped_book_lacks(write_spec, capsys):
    text = SEED_TEXT.replace("region: ap-northeast-2", "region: ap-south-1")
    path = write_spec(text.replace("[b, c, d]", "[a, b, c]"))  # ap-south-1 has AZs a, b, c
    line = _fails(capsys, str(path))
    assert line == (
        f"kafkanet: error: no prices for region ap-south-1: add regions.ap-south-1 "
        f"(usd, as_of and source per figure) to {PRICES_FILE}"
    )


def test_unknown_instance_type(write_spec, capsys):
    path = write_spec(SEED_TEXT.replace("instance_type: t3.small", "instance_type: c5.large"))
    line = _fails(capsys, str(path))
    assert line == (
        "kafkanet: error: no price for instance type c5.large in ap-northeast-2: add "
        f"regions.ap-northeast-2.ec2_hourly.c5.large (usd, as_of and source per figure) to {PRICES_FILE}"
    )


@pytest.mark.parametrize(
    "region,missing",
    [
        (_region(ebs_gb_month={"gp2": _figure(0.1)}), "no price for EBS volume type gp3 in ap-northeast-2: "
         "add regions.ap-northeast-2.ebs_gb_month.gp3 "),
        (_region(ebs_gb_month=None), "no price for EBS volume type gp3 in ap-northeast-2: "
         "add regions.ap-northeast-2.ebs_gb_month.gp3 "),
        (_region(nat_gateway_gb=None), "no nat_gateway_gb price for ap-northeast-2: "
         "add regions.ap-northeast-2.nat_gateway_gb "),
    ],
    ids=["other-volume-type", "no-volume-prices", "no-gateway-processing"],
)
def test_missing_figure_names_the_key_and_the_file(region, missing, tmp_path, capsys):
    book = _book(tmp_path, ap_northeast_2=region)
    line = _fails(capsys, "ttareungyi", "--prices", str(book))
    assert line == f"kafkanet: error: {missing}(usd, as_of and source per figure) to {book}"


@pytest.mark.parametrize("egress", ["-5", "-0.5", "lots", "nan", "inf", ""])
def test_bad_egress(egress, capsys):
    line = _fails(capsys, "ttareungyi", "--egress-gb", egress)
    assert line == (
        f"kafkanet: error: --egress-gb: {egress!r} is not a number of GB per month; give one of 0 or more, e.g. 100"
    )


def test_bad_egress_through_the_api():
    with pytest.raises(UserError, match="--egress-gb: -1 is not a number"):
        estimate(load(SEED), -1)


FIG = "{usd: 0.045, as_of: 2025-01-01, source: 'https://aws.amazon.com/vpc/pricing/'}"
MALFORMED = [
    ("not-yaml", "regions: [unclosed\n", "not YAML: line 2, column 1: "),
    ("not-a-mapping", "- us-east-1\n", "expected one top-level key, regions"),
    ("other-top-key", f"regions: {{}}\nnotes: {FIG}\n", "expected one top-level key, regions"),
    ("duplicate-key", "regions:\n  us-east-1: {}\n  us-east-1: {}\n", "key 'us-east-1' appears twice"),
    ("unknown-region", "regions:\n  mars-north-1: {}\n", "regions.mars-north-1: not a region kafkanet knows"),
    ("region-not-mapping", "regions:\n  us-east-1: 3\n", "regions.us-east-1: expected a mapping of price items"),
    ("unknown-item", f"regions:\n  us-east-1:\n    nat_gw_hourly: {FIG}\n",
     "regions.us-east-1.nat_gw_hourly: unknown item; allowed: ec2_hourly, ebs_gb_month, public_ipv4_hourly"),
    ("named-not-mapping", "regions:\n  us-east-1:\n    ec2_hourly: 0.01\n",
     "regions.us-east-1.ec2_hourly: expected a mapping of instance type to its figure"),
    ("bare-number", "regions:\n  us-east-1:\n    nat_gateway_hourly: 0.045\n",
     "regions.us-east-1.nat_gateway_hourly: expected exactly usd, as_of and source (got float)"),
    ("no-as-of", "regions:\n  us-east-1:\n    nat_gateway_hourly: {usd: 0.045, source: 'https://x.example/'}\n",
     "regions.us-east-1.nat_gateway_hourly: expected exactly usd, as_of and source (got usd, source)"),
    ("negative", f"regions:\n  us-east-1:\n    nat_gateway_hourly: {FIG.replace('0.045', '-0.045')}\n",
     "regions.us-east-1.nat_gateway_hourly.usd: -0.045 is not a price"),
    ("words", f"regions:\n  us-east-1:\n    ec2_hourly:\n      t3.small: {FIG.replace('0.045', 'cheap')}\n",
     "regions.us-east-1.ec2_hourly.t3.small.usd: 'cheap' is not a price"),
    ("boolean", f"regions:\n  us-east-1:\n    nat_gateway_gb: {FIG.replace('0.045', 'true')}\n",
     "regions.us-east-1.nat_gateway_gb.usd: True is not a price"),
    ("as-of-text", f"regions:\n  us-east-1:\n    cross_az_gb: {FIG.replace('2025-01-01', 'lately')}\n",
     "regions.us-east-1.cross_az_gb.as_of: 'lately' is not a date; write it as YYYY-MM-DD"),
    ("as-of-impossible", f"regions:\n  us-east-1:\n    cross_az_gb: {FIG.replace('2025-01-01', '2025-13-01')}\n",
     "not YAML: line 3, column 38: '2025-13-01' is not a date (month must be in 1..12)"),
    ("source-not-https", f"regions:\n  us-east-1:\n    cross_az_gb: {FIG.replace('https', 'http')}\n",
     "regions.us-east-1.cross_az_gb.source: 'http://aws.amazon.com/vpc/pricing/' is not the https:// URL"),
]


@pytest.mark.parametrize("text,fragment", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_price_book(text, fragment, tmp_path, capsys):
    book = tmp_path / "prices.yaml"
    book.write_text(text)
    line = _fails(capsys, "ttareungyi", "--prices", str(book))
    assert line.startswith(f"kafkanet: error: {book}: malformed price book: "), line
    assert fragment in line


def test_missing_price_book(tmp_path, capsys):
    book = tmp_path / "nope.yaml"
    assert _fails(capsys, "ttareungyi", "--prices", str(book)) == (
        f"kafkanet: error: {book}: cannot read the price book: No such file or directory"
    )


def test_readme_shows_the_seed_table_as_kafkanet_prints_it(capsys):
    assert main(["cost", "ttareungyi"]) == 0
    table = capsys.readouterr().out
    assert f"```text\n{table}```" in (ROOT / "README.md").read_text()
