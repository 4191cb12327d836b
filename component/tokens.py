"""HMAC-SHA256 capabilities carried in URLs: PUT slot tokens and download tickets.

The component signs, the HTTP server verifies; the shared ``[http] secret`` is the only
state they share, so any node's HTTP server can check any node's slot. Tokens live in
the query string because many clients drop the slot's ``<header>`` elements.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from component.errors import InvalidRequest, InvalidToken
from component.layout import SlotPath

TOKEN_VERSION = "1"
# Every key a PUT URL may carry (UploadGrant.query); "type" is optional and unsigned.
UPLOAD_QUERY_KEYS = frozenset({"v", "size", "exp", "from", "to", "type", "sig"})


@functools.lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``secret``, fed nothing: copied for each signature.

    A copy skips the key schedule (padding and hashing the key twice), which was most
    of the cost of signing a slot. Few secrets per process (``[http] secret``, tests).
    """
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _text(digest: bytes) -> str:
    """``base64.urlsafe_b64encode(digest)`` without its padding, in C calls only."""
    return binascii.b2a_base64(digest, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _sign(secret: str, *parts: str) -> str:
    mac = _keyed(secret).copy()
    mac.update("\x00".join(parts).encode())
    return _text(mac.digest())


# The PUT token's query keys: version, size, expiry, uploader, recipient (+ "sig", and
# "type", which is recorded but deliberately not signed).
PUT_FIELDS = ("v", "size", "exp", "from", "to")


def put_signature(
    secret: str, signed_path: str, chat_type: str, size: str, exp: str, uploader: str, to: str
) -> str:
    """The PUT token's ``sig``: the HMAC over the path (:attr:`SlotPath.signed_path`), the
    chat type and :data:`PUT_FIELDS` (the one list), the numbers as decimal text.

    What ``_sign(secret, "put", TOKEN_VERSION, signed_path, size, exp, uploader, to,
    chat_type)`` returns (tests compare both), in fewer steps: it runs for every slot.
    """
    mac = _keyed(secret).copy()
    fields = (TOKEN_VERSION, signed_path, size, exp, uploader, to, chat_type)
    mac.update(("put\x00" + "\x00".join(fields)).encode())
    return _text(mac.digest())


def _put_signature(secret: str, path: SlotPath, fields: Mapping[str, str]) -> str:
    """:func:`put_signature` of a query's fields (its ``v`` signed as it is)."""
    v, size, exp, uploader, recipient = (fields[k] for k in PUT_FIELDS)
    signed = path.signed_path
    return _sign(secret, "put", v, signed, size, exp, uploader, recipient, path.chat_type)


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadGrant:
    """What a valid PUT token grants: one upload of exactly ``size`` bytes to ``path``."""

    path: SlotPath
    size: int
    expires: int
    uploader: str
    recipient: str
    content_type: str = ""

    def query(self, secret: str) -> dict[str, str]:
        """The signed query parameters for the PUT URL."""
        values = (TOKEN_VERSION, str(self.size), str(self.expires), self.uploader, self.recipient)
        q = dict(zip(PUT_FIELDS, values, strict=True))
        sig = _put_signature(secret, self.path, q)
        if self.content_type:
            q["type"] = self.content_type  # recorded, deliberately not signed
        q["sig"] = sig
        return q


def strict_upload_query(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The PUT URL's query as a dict, refusing any ambiguity before the token is read.

    A repeated key (``sig=VALID&sig=forged``) would leave the meaning to whichever value
    a parser keeps, and a key the token does not know is not ours: both are refused.

    :raises InvalidRequest: a key repeats, or is not one of :data:`UPLOAD_QUERY_KEYS`;
        the text names the key (never a value: ``sig`` is a bearer secret).
    """
    query: dict[str, str] = {}
    for key, value in pairs:
        shown = repr(key[:32])  # client input, into the log: quoted, escaped, cut
        if key not in UPLOAD_QUERY_KEYS:
            raise InvalidRequest(f"Malformed upload URL: unknown query key {shown}")
        if key in query:
            raise InvalidRequest(f"Malformed upload URL: query key {shown} repeated")
        query[key] = value
    return query


def verify_upload(
    secret: str, path: SlotPath, query: Mapping[str, str], now: float | None = None
) -> UploadGrant:
    """Check a PUT URL's token against its path.

    :raises InvalidToken: missing (``missing=True``), malformed, forged, for another
        path or size, or expired.
    """
    sig = query.get("sig")
    if not sig:
        raise InvalidToken(missing=True)
    try:
        fields = {k: query[k] if k != "to" else query.get(k, "") for k in PUT_FIELDS}
        size, expires = int(fields["size"]), int(fields["exp"])
    except (KeyError, ValueError) as exc:
        raise InvalidToken("Malformed token") from exc
    fields.update(size=str(size), exp=str(expires))  # the numbers as the signer wrote them
    expected = _put_signature(secret, path, fields)
    if fields["v"] != TOKEN_VERSION or not hmac.compare_digest(expected, sig):
        raise InvalidToken("Invalid token")
    if expires < (time.time() if now is None else now):
        raise InvalidToken("Upload slot expired")
    return UploadGrant(
        path=path,
        size=size,
        expires=expires,
        uploader=fields["from"],
        recipient=fields["to"],
        content_type=query.get("type", ""),
    )


def _ticket_signature(secret: str, path: SlotPath, jid: str, expires: int) -> str:
    """The HMAC of a download ticket: path, downloader and expiry (the one list)."""
    return _sign(secret, "get", TOKEN_VERSION, path.signed_path, jid, str(expires))


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadTicket:
    """A short-lived, personal download right naming the downloader's bare JID."""

    path: SlotPath
    jid: str
    expires: int

    def query(self, secret: str) -> dict[str, str]:
        """The signed query parameters to append to the GET URL."""
        sig = _ticket_signature(secret, self.path, self.jid, self.expires)
        return {"jid": self.jid, "exp": str(self.expires), "ticket": sig}


def verify_ticket(
    secret: str, path: SlotPath, query: Mapping[str, str], now: float | None = None
) -> DownloadTicket | None:
    """Return the download ticket in ``query``, ``None`` if there is none.

    :raises InvalidToken: a ticket is present but malformed, forged or expired.
    """
    sig = query.get("ticket")
    if sig is None:
        return None
    try:
        jid, expires = query["jid"], int(query["exp"])
    except (KeyError, ValueError) as exc:
        raise InvalidToken("Malformed download ticket") from exc
    expected = _ticket_signature(secret, path, jid, expires)
    if not hmac.compare_digest(expected, sig):
        raise InvalidToken("Invalid download ticket")
    if expires < (time.time() if now is None else now):
        raise InvalidToken("Download ticket expired")
    return DownloadTicket(path=path, jid=jid, expires=expires)
