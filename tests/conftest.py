"""Shared fixtures: config factory and the real-server fixtures (tests/fixtures/)."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.config",
    "tests.fixtures.prosody",
    "tests.fixtures.sshd",
    "tests.fixtures.mariadb",
    "tests.fixtures.postgresql",
    "tests.fixtures.stack",
    "tests.fixtures.ejabberd",
    "tests.fixtures.clamd",
]
