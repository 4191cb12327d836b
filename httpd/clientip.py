"""The client's address (AFT_LOG's CLIENT_IP, the access log) behind trusted reverse proxies.

A proxy names the client in ``X-Forwarded-For`` (or RFC 7239 ``Forwarded: for=``), but any
client can send those headers too. They are read only when the direct peer is one of
``[http] trusted_proxies``; then the chain is walked from the right (the hop our proxy
appended) past every trusted proxy, and the first address that is not one is the
client. By default nothing is trusted and the client is the TCP peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import hdrs, web

from component.config import IPNetwork
from httpd.appkeys import TRUSTED_PROXIES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
X_FORWARDED_FOR = "X-Forwarded-For"


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``"[::1]:443"``), or
    ``None`` for anything else (``unknown``, RFC 7239 obfuscated ``_hidden``, garbage).

    IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) come back as IPv4.
    """
    text = text.strip().strip('"')
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(addr in net for net in networks)  # False across IP versions


def resolve_client_ip(peer: str | None, chain: Sequence[str], networks: Sequence[IPNetwork]) -> str:
    """The client's address given the TCP ``peer`` and the forwarding ``chain``.

    :param chain: the hops of ``X-Forwarded-For`` (or ``Forwarded: for=``), left to right.
    :param networks: the trusted proxies.
    :returns: the right-most hop that is not a trusted proxy; the left-most hop if all
        are; ``peer`` itself when the peer is not trusted or the chain is empty. An
        unreadable hop ends the walk at the last address a trusted proxy vouched for.
    """
    peer_addr = parse_address(peer or "")
    if peer_addr is None or not _trusted(peer_addr, networks):
        return peer or ""
    client = peer_addr
    for hop in reversed(chain):
        addr = parse_address(hop)
        if addr is None:
            break
        client = addr
        if not _trusted(addr, networks):
            break
    return str(client)


def forwarding_chain(request: web.BaseRequest) -> list[str]:
    """The hops a proxy listed: ``X-Forwarded-For`` (every header line, in order), else
    the ``for=`` parameters of ``Forwarded``."""
    lines = request.headers.getall(X_FORWARDED_FOR, [])
    if lines:
        return [hop.strip() for line in lines for hop in line.split(",") if hop.strip()]
    if hdrs.FORWARDED in request.headers:
        return [element["for"] for element in request.forwarded if "for" in element]
    return []


def _networks(request: web.BaseRequest) -> tuple[IPNetwork, ...]:
    """The app's trusted proxies; none for a request that never reached the app."""
    if not isinstance(request, web.Request):
        return ()
    try:
        return request.app[TRUSTED_PROXIES]
    except (AssertionError, KeyError):  # not routed (aiohttp asserts a match_info)
        return ()


def client_ip(request: web.BaseRequest) -> str:
    """The client's address for ``request``: the peer, or whom a trusted proxy names.

    Cheap enough to call where needed (the AFT_LOG row, the access log line): with no
    trusted proxies it is ``request.remote``.
    """
    networks = _networks(request)
    if not networks:
        return request.remote or ""
    return resolve_client_ip(request.remote, forwarding_chain(request), networks)
