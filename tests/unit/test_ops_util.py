"""Size, age, URL and secret helpers of the operations commands."""

from __future__ import annotations

import pytest

from component.dburl import safe_url
from httpd.ops.util import (
    config_secrets,
    human_bytes,
    is_loopback_host,
    parse_age,
    parse_size,
    redact,
)
from tests.fixtures.config import ConfigFactory


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256M", 256 * 1024**2),
        ("1k", 1024),
        ("2GiB", 2 * 1024**3),
        ("100MB", 100 * 10**6),
        ("5000", 5000),
        ("1.5K", 1536),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    """K/M/G are binary, KB/MB/GB decimal, a bare number is bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0M", "-5M", "12X", "M", "1e9"])
def test_parse_size_rejects(text: str) -> None:
    """Zero, negative and unknown units are refused."""
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400)],
)
def test_parse_age(text: str, seconds: int) -> None:
    """s, m (minutes), h, d, w."""
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "0d", "-1d", "3y", "1.5d", "d"])
def test_parse_age_rejects(text: str) -> None:
    """No unit, zero, negative, fractions and unknown units are refused."""
    with pytest.raises(ValueError, match="age"):
        parse_age(text)


def test_safe_url_hides_password() -> None:
    """The password becomes *** and the rest of the URL is kept."""
    assert safe_url("mysql://mft:s3cr%40t@db:3306/mft") == "mysql://mft:***@db:3306/mft"
    assert safe_url("sftp://u@h:22/p") == "sftp://u@h:22/p"


def test_human_bytes() -> None:
    """Decimal units, one decimal place."""
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_234_567) == "1.2 MB"
    assert human_bytes(5 * 10**12) == "5.0 TB"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("upload.localhost", True),
        ("127.0.0.5", True),
        ("[::1]", True),
        ("::1", True),
        ("example.com", False),
        ("10.0.0.1", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    """Loopback names and addresses only."""
    assert is_loopback_host(host) is loopback


def test_config_secrets_and_redact(config_factory: ConfigFactory) -> None:
    """Every secret of the configuration is replaced in printed text."""
    cfg = config_factory(database={"url": "mysql://mft:dbpass-123@127.0.0.1:1/mft"})
    hidden = config_secrets(cfg)
    assert {cfg.xmpp.secret, cfg.http.secret, "dbpass-123"} <= set(hidden)
    text = f"a {cfg.xmpp.secret} b {cfg.http.secret} c dbpass-123"
    assert redact(text, hidden) == "a *** b *** c ***"
