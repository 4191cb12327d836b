"""Slot policy: every rule, their order, quota windows and the pending-slot ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from component.errors import FileTooLarge, InvalidRequest, NotAllowed, QuotaExceeded
from component.xmpp.policy import (
    SlotLedger,
    SlotPolicy,
    Usage,
    check_slot_request,
    combine_usage,
    day_start,
    hour_start,
    parse_size,
)
from tests.fixtures.config import ConfigFactory

NOW = datetime(2024, 5, 17, 13, 45, 10, tzinfo=UTC)
ME = "romeo@localhost"
UNI = ["\uff11", "\u0661", "\u00b2"]  # not ASCII, though str.isdigit() says they are digits


def test_accepts_a_normal_request(config_factory: ConfigFactory) -> None:
    """A local user with a sane name and size gets the size back as an int."""
    cfg = config_factory()
    assert check_slot_request(cfg, ME, "très cool.jpg", "23456") == 23456
    assert check_slot_request(cfg, ME, "x", 1) == 1


def test_disabled_mode_first(config_factory: ConfigFactory) -> None:
    """Mode disabled refuses even a request that is otherwise bad."""
    cfg = config_factory(upload={"mode": "disabled"})
    with pytest.raises(NotAllowed):
        check_slot_request(cfg, ME, "a/b", "-1")


@pytest.mark.parametrize("jid", ["mallory@evil.example", "x@localhost.evil", "x@sub.localhost"])
def test_foreign_domains_refused(config_factory: ConfigFactory, jid: str) -> None:
    """Only the server's own domain uploads by default (no suffix tricks)."""
    with pytest.raises(NotAllowed):
        check_slot_request(config_factory(), jid, "a.txt", "3")


def test_allowed_domains_configured(config_factory: ConfigFactory) -> None:
    """allowed_domains replaces the default, case-insensitively."""
    cfg = config_factory(upload={"allowed_domains": ["Example.org"]})
    assert check_slot_request(cfg, "a@example.ORG", "a.txt", "3") == 3
    with pytest.raises(NotAllowed):
        check_slot_request(cfg, ME, "a.txt", "3")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../etc/passwd", "nul\x00.txt", "x" * 1001])
def test_bad_filenames(config_factory: ConfigFactory, name: str) -> None:
    """Names that cannot be a URL segment are bad-request."""
    with pytest.raises(InvalidRequest):
        check_slot_request(config_factory(), ME, name, "3")


@pytest.mark.parametrize("name", ["a b.txt", "..hidden", "back\\slash", "日本語.png", "x" * 1000])
def test_odd_but_fine_filenames(config_factory: ConfigFactory, name: str) -> None:
    """Spaces, unicode, backslashes and leading dots are allowed (stored by resource only)."""
    assert check_slot_request(config_factory(), ME, name, "3") == 3


@pytest.mark.parametrize(
    "size",
    ["0", "-1", "+5", "1.0", "1e3", "0x10", "", " 5", "abc", 0, -3, True, "00", "1" * 21, *UNI],
)
def test_bad_sizes(config_factory: ConfigFactory, size: str | int) -> None:
    """Sizes that are not positive decimal integers are bad-request."""
    with pytest.raises(InvalidRequest):
        check_slot_request(config_factory(), ME, "a.txt", size)


@pytest.mark.parametrize(
    "size", ["-1", "+5", " 5", "\uff11", "\u00b2", "1" * 21, "0", "00", "", "5\n", "007"]
)
def test_size_verdicts_are_parse_sizes(config_factory: ConfigFactory, size: str) -> None:
    """SlotPolicy's quick test of a size says what parse_size says, message included."""
    policy = SlotPolicy(config_factory())
    try:
        expected: object = parse_size(size)
    except InvalidRequest as exc:
        expected = exc.text
    try:
        got: object = policy.check(ME, "a.txt", size)
    except InvalidRequest as exc:
        got = exc.text
    assert got == expected


def test_too_large_carries_max(config_factory: ConfigFactory) -> None:
    """A size over max_file_size raises FileTooLarge with the limit; the limit itself passes."""
    cfg = config_factory(upload={"max_file_size": 1000})
    assert check_slot_request(cfg, ME, "a.txt", "1000") == 1000
    with pytest.raises(FileTooLarge) as err:
        check_slot_request(cfg, ME, "a.txt", "1001")
    assert err.value.max_size == 1000 and err.value.size == 1001


def test_default_max_is_4gib(config_factory: ConfigFactory) -> None:
    """max_file_size 0 means 4 GiB."""
    cfg = config_factory()
    assert check_slot_request(cfg, ME, "a", str(4 * 1024**3)) == 4 * 1024**3
    with pytest.raises(FileTooLarge):
        check_slot_request(cfg, ME, "a", str(4 * 1024**3 + 1))
    assert parse_size("9" * 20) == int("9" * 20)


def test_files_per_hour(config_factory: ConfigFactory) -> None:
    """files_per_hour: the n-th file passes, the next waits for the next full hour."""
    cfg = config_factory(upload={"files_per_hour": 3})
    assert check_slot_request(cfg, ME, "a", "1", Usage(files_this_hour=2), NOW) == 1
    with pytest.raises(QuotaExceeded) as err:
        check_slot_request(cfg, ME, "a", "1", Usage(files_this_hour=3), NOW)
    assert err.value.retry_at == datetime(2024, 5, 17, 14, 0, tzinfo=UTC)


def test_daily_bytes(config_factory: ConfigFactory) -> None:
    """daily_bytes: exactly the quota passes, one byte more waits for midnight UTC."""
    cfg = config_factory(upload={"daily_bytes": 100})
    assert check_slot_request(cfg, ME, "a", "40", Usage(bytes_today=60), NOW) == 40
    with pytest.raises(QuotaExceeded) as err:
        check_slot_request(cfg, ME, "a", "41", Usage(bytes_today=60), NOW)
    assert err.value.retry_at == datetime(2024, 5, 18, tzinfo=UTC)


def test_quota_not_checked_without_usage(config_factory: ConfigFactory) -> None:
    """Without a usage argument the pure checks run but not the quota."""
    cfg = config_factory(upload={"files_per_hour": 1})
    assert check_slot_request(cfg, ME, "a", "1") == 1


def test_windows_are_utc() -> None:
    """Quota windows start at the UTC hour and day, whatever the input's zone."""
    from datetime import timedelta, timezone

    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert hour_start(local) == datetime(2024, 5, 17, 13, tzinfo=UTC)
    assert day_start(local) == datetime(2024, 5, 17, tzinfo=UTC)


def test_ledger_pending_expiry_and_settle() -> None:
    """Pending slots count until they expire or are settled as uploaded."""
    ledger = SlotLedger()
    ledger.add(ME, "r1", 10, expires=100.0, now=0.0)
    ledger.add(ME, "r2", 20, expires=200.0, now=0.0)
    ledger.add("juliet@localhost", "r3", 5, expires=100.0, now=0.0)
    assert {p.resource for p in ledger.pending(ME, now=50.0)} == {"r1", "r2"}
    assert {p.resource for p in ledger.pending(ME, now=150.0)} == {"r2"}
    ledger.settle(ME, ["r2"])
    assert ledger.pending(ME, now=150.0) == []
    assert len(ledger) == 1  # juliet's slot until someone prunes it
    ledger.add(ME, "r4", 1, expires=1000.0, now=500.0)  # periodic prune drops juliet's
    assert len(ledger) == 1


def test_combine_usage() -> None:
    """Usage = AFT_LOG counts + one file and its size per pending slot."""
    ledger = SlotLedger()
    ledger.add(ME, "a", 10, expires=10.0, now=0.0)
    ledger.add(ME, "b", 5, expires=10.0, now=0.0)
    assert combine_usage(2, 100, ledger.pending(ME, now=1.0)) == Usage(4, 115)
