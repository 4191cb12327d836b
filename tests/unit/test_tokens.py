"""Signed PUT tokens and download tickets."""

from __future__ import annotations

import pytest

from component.errors import InvalidRequest, InvalidToken
from component.layout import SlotPath
from component.tokens import (
    DownloadTicket,
    UploadGrant,
    strict_upload_query,
    verify_ticket,
    verify_upload,
)

SECRET = "s" * 32
PATH = SlotPath.parse("node_1", "im", "20260101", "10", "B" * 24, "photo.jpg")


def grant(**changes: object) -> UploadGrant:
    values: dict[str, object] = {
        "path": PATH,
        "size": 1234,
        "expires": 2_000_000_000,
        "uploader": "alice@example.com",
        "recipient": "bob@example.com",
        "content_type": "image/jpeg",
    }
    values.update(changes)
    return UploadGrant(**values)  # type: ignore[arg-type]


def test_round_trip() -> None:
    """A token verifies against its own path and yields what was granted."""
    got = verify_upload(SECRET, PATH, grant().query(SECRET), now=1_000_000_000)
    assert got == grant()


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", "1235"), ("exp", "2000000001"), ("from", "mallory@example.com"), ("to", "")],
)
def test_tampered_fields_are_refused(field: str, value: str) -> None:
    """Changing any signed field breaks the signature."""
    q = grant().query(SECRET)
    q[field] = value
    with pytest.raises(InvalidToken) as info:
        verify_upload(SECRET, PATH, q, now=1_000_000_000)
    assert not info.value.missing


def test_content_type_is_not_bound() -> None:
    """Clients change or drop the content type; the token stays valid."""
    q = grant().query(SECRET)
    q.pop("type")
    assert verify_upload(SECRET, PATH, q, now=0).content_type == ""


def test_other_path_chat_type_secret_and_expiry() -> None:
    """A token is only good for its path, its secret, and until it expires."""
    q = grant().query(SECRET)
    other = SlotPath.parse("node_1", "groupchat", "20260101", "10", "B" * 24, "photo.jpg")
    for path, secret, now in ((other, SECRET, 0), (PATH, "t" * 32, 0), (PATH, SECRET, 2e9 + 1)):
        with pytest.raises(InvalidToken):
            verify_upload(secret, path, q, now=now)


def test_missing_and_malformed() -> None:
    """No signature is 'missing' (401); garbage is 'invalid' (403)."""
    with pytest.raises(InvalidToken) as info:
        verify_upload(SECRET, PATH, {}, now=0)
    assert info.value.missing
    with pytest.raises(InvalidToken) as info:
        verify_upload(SECRET, PATH, {"sig": "x", "v": "1", "size": "abc", "exp": "1"}, now=0)
    assert not info.value.missing


def test_download_ticket() -> None:
    """Tickets name the downloader; forged, expired or absent tickets are told apart."""
    ticket = DownloadTicket(path=PATH, jid="bob@example.com", expires=100)
    q = ticket.query(SECRET)
    assert verify_ticket(SECRET, PATH, q, now=50) == ticket
    assert verify_ticket(SECRET, PATH, {}, now=50) is None
    with pytest.raises(InvalidToken):
        verify_ticket(SECRET, PATH, q, now=101)
    with pytest.raises(InvalidToken):
        verify_ticket(SECRET, PATH, {**q, "jid": "eve@example.com"}, now=50)


def test_strict_upload_query_refuses_repeats_and_unknown_keys() -> None:
    """A repeated or unknown key is InvalidRequest naming the key, never the value."""
    good = [("v", "1"), ("size", "3"), ("exp", "9"), ("from", "a@b"), ("sig", "SECRET")]
    assert strict_upload_query(good) == dict(good)
    for extra, reason in [
        (("sig", "SECRET2"), "'sig' repeated"),
        (("exp", "99"), "'exp' repeated"),
        (("x\x1b[31m", "1"), "unknown query key 'x\\x1b[31m'"),
        (("", "1"), "unknown query key ''"),
    ]:
        with pytest.raises(InvalidRequest) as info:
            strict_upload_query([*good, extra])
        assert reason in info.value.text and "SECRET" not in info.value.text


@pytest.mark.parametrize("to", ["", "room@conference.example.com"])
def test_put_signature_is_the_grants(to: str) -> None:
    """put_signature (the slot path's) signs what UploadGrant.query signs, text for text."""
    from component.tokens import put_signature

    g = grant(recipient=to)
    sig = put_signature(
        SECRET, PATH.signed_path, PATH.chat_type, "1234", "2000000000", g.uploader, to
    )
    assert sig == g.query(SECRET)["sig"]
    assert verify_upload(SECRET, PATH, g.query(SECRET), now=0) == g
