"""CLIENT_IP behind reverse proxies: forwarding headers only from ``[http] trusted_proxies``."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from httpd.clientip import forwarding_chain, parse_address, resolve_client_ip
from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import httpd_env

LOCAL = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")]
LAN = [*LOCAL, ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "chain", "trusted", "client"),
    [
        # Nothing trusted (the default): the header is never read.
        ("127.0.0.1", ["203.0.113.7"], [], "127.0.0.1"),
        # A client sending the header itself is not a proxy: spoofing ignored.
        ("198.51.100.4", ["203.0.113.7"], LOCAL, "198.51.100.4"),
        # nginx on this host names the client.
        ("127.0.0.1", ["203.0.113.7"], LOCAL, "203.0.113.7"),
        ("127.0.0.1", [], LOCAL, "127.0.0.1"),
        # A forged left part: the right-most untrusted hop wins.
        ("127.0.0.1", ["192.0.2.66", "203.0.113.7"], LOCAL, "203.0.113.7"),
        # Two trusted proxies (load balancer 10.x, then nginx): walk past both.
        ("127.0.0.1", ["192.0.2.66", "203.0.113.7", "10.0.0.2"], LAN, "203.0.113.7"),
        # Only trusted addresses: the left-most one.
        ("127.0.0.1", ["10.0.0.5", "10.0.0.2"], LAN, "10.0.0.5"),
        # An unreadable hop ends the walk at the last address a trusted proxy vouched for.
        ("127.0.0.1", ["203.0.113.7", "unknown", "10.0.0.2"], LAN, "10.0.0.2"),
        ("127.0.0.1", ["_hidden"], LOCAL, "127.0.0.1"),
        # Ports, as some balancers add them.
        ("127.0.0.1", ["203.0.113.7:4711"], LOCAL, "203.0.113.7"),
        # IPv6: peer, hops, brackets with a port, and a v4-mapped peer.
        ("::1", ["2001:db8::7"], LOCAL, "2001:db8::7"),
        ("::1", ["[2001:db8::7]:4711"], LOCAL, "2001:db8::7"),
        ("::1", ["2001:DB8:0::7", "::1"], LOCAL, "2001:db8::7"),
        ("::ffff:127.0.0.1", ["203.0.113.7"], LOCAL, "203.0.113.7"),
        ("2001:db8::1", ["203.0.113.7"], LOCAL, "2001:db8::1"),
    ],
)
def test_resolve_client_ip(
    peer: str, chain: list[str], trusted: list[ipaddress.IPv4Network], client: str
) -> None:
    """The right-most untrusted hop, and only when the peer is a trusted proxy."""
    assert resolve_client_ip(peer, chain, trusted) == client


def test_parse_address_rejects_what_is_not_an_address() -> None:
    """Names, obfuscated identifiers and junk are not addresses."""
    for text in ("unknown", "_hidden", "proxy.example", "1.2.3", "", '"[::1', "[::1]x"):
        assert parse_address(text) is None, text
    assert str(parse_address('"[2001:db8::7]:80"')) == "2001:db8::7"


def test_chain_from_every_x_forwarded_for_line_else_forwarded() -> None:
    """X-Forwarded-For lines are joined in order; Forwarded for= only without them."""
    headers = CIMultiDict(
        [
            ("X-Forwarded-For", "192.0.2.1, 192.0.2.2"),
            ("X-Forwarded-For", "192.0.2.3"),
            ("Forwarded", "for=192.0.2.99"),
        ]
    )
    assert forwarding_chain(make_mocked_request("GET", "/", headers=headers)) == [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
    ]
    forwarded = CIMultiDict(
        [("Forwarded", 'for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711"')]
    )
    assert forwarding_chain(make_mocked_request("GET", "/", headers=forwarded)) == [
        "192.0.2.60",
        "[2001:db8:cafe::17]:4711",
    ]
    assert forwarding_chain(make_mocked_request("GET", "/")) == []


@pytest.mark.parametrize(
    ("trusted", "client"), [((), "127.0.0.1"), (("127.0.0.1",), "203.0.113.7")]
)
async def test_aft_log_and_access_log_use_the_client(
    config_factory: ConfigFactory,
    caplog: pytest.LogCaptureFixture,
    trusted: tuple[str, ...],
    client: str,
) -> None:
    """PUT and GET rows and access-log lines carry the proxied client only from a trusted peer."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    headers = {"X-Forwarded-For": "192.0.2.66, 203.0.113.7"}
    async with httpd_env(config_factory(http={"trusted_proxies": list(trusted)})) as env:
        body = b"proxied upload"
        slot = env.slot(len(body))
        async with env.client.put(slot.put_url, data=body, headers=headers) as resp:
            assert resp.status == 201
        async with env.client.get(slot.get_url, headers=headers) as resp:
            assert await resp.read() == body
        post = await env.audit.next_row()
        get = await env.audit.next_row()
    assert (post.method, post.client_ip) == ("POST", client)
    assert (get.method, get.client_ip) == ("GET", client)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 2 and all(line.startswith(f'{client} "') for line in lines), lines
