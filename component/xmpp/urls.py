"""URLs: a slot's signed PUT query, which slot a GET URL of this cluster names, and a
user's personal download URL."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from urllib.parse import quote_plus, unquote, urlencode, urlsplit, urlunsplit

from component.config import Config
from component.errors import InvalidRequest
from component.layout import SlotPath
from component.tokens import TOKEN_VERSION, DownloadTicket, put_signature

# The characters quote_plus never changes: such values are copied as they are.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
# The others (JIDs, content types) repeat from slot to slot: quoted once each.
_quoted = functools.lru_cache(maxsize=1024)(quote_plus)


def query_string(query: Mapping[str, str]) -> str:
    """``urlencode(query)``, character for character, without quoting what needs none.

    Most values of a slot's query (version, numbers, signature) are unreserved text;
    urlencode would still run each through the quoting machinery.
    """
    return "&".join(
        f"{_quoted(k) if _UNRESERVED.fullmatch(k) is None else k}="
        f"{_quoted(v) if _UNRESERVED.fullmatch(v) is None else v}"
        for k, v in query.items()
    )


def put_query(
    secret: str,
    signed_path: str,
    chat_type: str,
    size: int,
    expires: int,
    uploader: str,
    recipient: str,
    content_type: str,
    sep: str = "&",
) -> str:
    """``query_string(UploadGrant(...).query(secret))``, character for character, built
    directly: the component's per-slot path, without the grant and the dict.

    The keys are fixed and need no quoting, nor do the numbers and the signature
    (URL-safe base64); the JIDs and the content type go through the memo of
    ``quote_plus``. No value contains an XML special character once quoted, so with
    ``sep="&amp;"`` the text is ready for an XML attribute.
    """
    n, exp = str(size), str(expires)
    sig = put_signature(secret, signed_path, chat_type, n, exp, uploader, recipient)
    kind = f"{sep}type={_quoted(content_type)}" if content_type else ""
    return (
        f"v={TOKEN_VERSION}{sep}size={n}{sep}exp={exp}{sep}from={_quoted(uploader)}"
        f"{sep}to={_quoted(recipient)}{kind}{sep}sig={sig}"
    )


def personal_url(cfg: Config, url: str, jid: str) -> str:
    """``url`` (a GET URL of ours) with a signed ticket naming bare ``jid``.

    URLs of the nodes in ``[cluster]`` are accepted too: tickets are signed with the
    shared ``[http] secret`` and any node verifies them.

    :raises InvalidRequest: not a GET URL under our public URL (or a cluster node's).
    """
    parts = urlsplit(url.strip())
    path = parse_get_url(cfg, parts.scheme, parts.netloc, parts.path)
    ticket = DownloadTicket(
        path=path, jid=jid, expires=int(time.time()) + cfg.download.ticket_lifetime
    )
    base = urlsplit(node_bases(cfg)[path.node])
    return urlunsplit(
        (
            base.scheme,
            base.netloc,
            f"{base.path}/{path.url_path}",
            urlencode(ticket.query(cfg.http.secret)),
            parts.fragment,
        )
    )


def node_bases(cfg: Config) -> dict[str, str]:
    """Node id -> public base URL (without trailing slash), ours included."""
    nodes = {**cfg.cluster.nodes, cfg.node.id: cfg.http.public_url}
    return {node: url.rstrip("/") for node, url in nodes.items()}


def parse_get_url(cfg: Config, scheme: str, netloc: str, path: str) -> SlotPath:
    """The slot a GET URL of this cluster names.

    :raises InvalidRequest: not a GET URL under our public URL or a cluster node's.
    """
    for node, base_url in node_bases(cfg).items():
        base = urlsplit(base_url)
        prefix = f"{base.path}/{node}/"
        if (scheme.lower(), netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
            continue
        if not path.startswith(prefix):
            continue
        segments = path[len(base.path) + 1 :].split("/")
        if len(segments) != 6:
            break
        return SlotPath.parse(*(unquote(s) for s in segments))
    raise InvalidRequest("Not a download URL of this service")
