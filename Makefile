# Two commands for a fresh Debian machine (see README.rst):
#   make sandbox   install, then run the service with a throwaway local Prosody
#   make test      install, then run the whole test suite against real servers
# Run as root or with sudo available; system packages come from Debian.

PYTHON ?= python3
VENV   ?= .venv
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Servers the sandbox and the tests start as unprivileged child processes.
APT_PACKAGES := python3 python3-venv python3-dev gcc openssl prosody lua-unbound \
                mariadb-server mariadb-client postgresql postgresql-client \
                openssh-server openssh-client ejabberd erlang-dev \
                go-sendxmpp nginx-light systemd curl

# mod_mft_share for ejabberd, compiled against the installed ejabberd's headers.
EJABBERD_LIB  ?= $(lastword $(sort $(wildcard /usr/lib/*/ejabberd-*)))
XMPP_INCLUDE  ?= $(lastword $(sort $(wildcard /usr/lib/erlang/lib/p1_xmpp-*/include)))
EJABBERD_OUT  ?= build/ejabberd

.PHONY: sandbox test install system-packages venv lint bench clean ejabberd-module

sandbox: install
	$(VENV)/bin/mft sandbox

test: install
	$(VENV)/bin/python -m pytest

install: system-packages venv

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy component httpd

bench: install
	$(VENV)/bin/python benchmarks/slots.py
	$(VENV)/bin/python benchmarks/transfer.py
	$(VENV)/bin/python benchmarks/auditlog.py

ejabberd-module:
	mkdir -p $(EJABBERD_OUT)
	erlc -Wall -pa $(EJABBERD_LIB)/ebin -I $(EJABBERD_LIB)/include -I $(XMPP_INCLUDE) \
	  -o $(EJABBERD_OUT) deploy/ejabberd/mod_mft_share.erl

clean:
	rm -rf $(VENV) mft-sandbox build *.egg-info
