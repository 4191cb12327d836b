# Two commands for a fresh Debian machine (see README.rst):
#   make sandbox   install what the sandbox runs, then run the service with a throwaway
#                  local Prosody (make sandbox SANDBOX_FLAGS=--https for HTTPS uploads)
#   make test      install everything the tests start, then run the whole test suite
# Run as root or with sudo available; system packages come from Debian. On a machine with
# systemd, installing a server package also starts (and enables) its system service.

PYTHON ?= python3
VENV   ?= .venv
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SANDBOX_FLAGS ?=
# Python versions for every package in the venv and in its build environment: a new
# release of a dependency cannot break a fresh clone while warnings are errors.
# Refresh with `make constraints` (README "Development").
CONSTRAINTS := constraints.txt

# What `mft sandbox` runs: the venv's Python, Prosody (lua-unbound is its DNS library;
# openssl makes its certificate), the go-sendxmpp client the banner's upload example
# uses, and ca-certificates (pip's TLS; update-ca-certificates for --https). Of these
# only prosody is a server.
SANDBOX_PACKAGES := python3 python3-venv python3-dev gcc openssl ca-certificates \
                    prosody lua-unbound go-sendxmpp
# What only the test suite starts or calls (servers run as child processes on loopback;
# their system services start too, see above).
TEST_PACKAGES := mariadb-server mariadb-client openssh-server openssh-client ejabberd \
                 erlang-dev postgresql postgresql-client clamav-daemon nginx-light \
                 systemd curl util-linux

# mod_mft_share for ejabberd, compiled against the installed ejabberd's headers.
EJABBERD_LIB  ?= $(lastword $(sort $(wildcard /usr/lib/*/ejabberd-*)))
XMPP_INCLUDE  ?= $(lastword $(sort $(wildcard /usr/lib/erlang/lib/p1_xmpp-*/include)))
EJABBERD_OUT  ?= build/ejabberd

.PHONY: sandbox test install sandbox-packages test-packages apt-install venv constraints lint bench clean ejabberd-module

sandbox: sandbox-packages venv
	$(VENV)/bin/mft sandbox $(SANDBOX_FLAGS)

test: test-packages venv
	$(VENV)/bin/python -m pytest

install: test-packages venv

sandbox-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(SANDBOX_PACKAGES)"

test-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(SANDBOX_PACKAGES) $(TEST_PACKAGES)"

# Installs the missing ones of $(PACKAGES); prints nothing when all are there.
apt-install:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c $(CONSTRAINTS) pip
	$(VENV)/bin/pip install -q --disable-pip-version-check -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) -e '.[test]'
	touch $@

# Newest releases of everything, resolved in a scratch venv; review the diff, run
# `make test`, commit constraints.txt.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	.venv-constraints/bin/pip install -q -e '.[test]'
	{ sed -n '1,/^$$/p' $(CONSTRAINTS); \
	  .venv-constraints/bin/pip freeze --all --exclude-editable | grep -vi '^xmpp-mft' | LC_ALL=C sort -f; \
	} > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-constraints
	@echo "constraints.txt refreshed; now: make test && git diff constraints.txt"

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy component httpd

bench: install
	$(VENV)/bin/python benchmarks/peers.py
	$(VENV)/bin/python benchmarks/slots.py
	$(VENV)/bin/python benchmarks/transfer.py
	$(VENV)/bin/python benchmarks/auditlog.py

ejabberd-module:
	mkdir -p $(EJABBERD_OUT)
	erlc -Wall -pa $(EJABBERD_LIB)/ebin -I $(EJABBERD_LIB)/include -I $(XMPP_INCLUDE) \
	  -o $(EJABBERD_OUT) deploy/ejabberd/mod_mft_share.erl

clean:
	rm -rf $(VENV) mft-sandbox build *.egg-info
