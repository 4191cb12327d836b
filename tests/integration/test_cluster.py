"""Two nodes in one run: each its own component, repository and AFT_LOG, one shared secret.

node_1 (``upload.localhost``) and node_2 (``upload.node-2.test``) attach to the session
Prosody; each lists the other in ``[cluster] nodes``. A request that reaches the wrong
node is sent (307) to the node that owns the file, which serves and logs it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.fixtures.common import free_port
from tests.fixtures.prosody import NODE2_COMPONENT_JID, ClientFactory
from tests.fixtures.slots import ask_slot, personal_url, slot_urls
from tests.fixtures.stack import MftStack, StackFactory

pytestmark = pytest.mark.integration


@dataclass
class Cluster:
    """Two running nodes."""

    node_1: MftStack
    node_2: MftStack

    def at_node_2(self, url: str) -> URL:
        """``url`` (on node_1) with node_2's base: a request reaching the wrong node.

        Sent byte for byte as the component wrote it (no re-quoting by the client), so
        the redirect can be compared with the original URL exactly.
        """
        base_1, base_2 = self.node_1.cfg.http.public_url, self.node_2.cfg.http.public_url
        assert url.startswith(base_1 + "/")
        return URL(base_2 + url[len(base_1) :], encoded=True)


@pytest.fixture
async def cluster(mft_stack: StackFactory, tmp_path: Path) -> Cluster:
    """node_1 and node_2, each knowing the other's public URL; stopped after the test."""
    return await make_cluster(mft_stack, tmp_path)


async def make_cluster(
    mft_stack: StackFactory, tmp_path: Path, db_urls: tuple[str, str] | None = None
) -> Cluster:
    """Start node_1 and node_2 (their own SQLite AFT_LOGs unless ``db_urls`` are given)."""
    own = tmp_path / "node_2"  # its own repository directory and database
    db_1, db_2 = db_urls or (
        f"sqlite:///{tmp_path}/aft_log.sqlite3",
        f"sqlite:///{own}/aft_log.sqlite3",
    )
    ports = {"node_1": free_port(), "node_2": free_port()}
    urls = {node: f"http://127.0.0.1:{port}" for node, port in ports.items()}
    secret = secrets.token_hex(16)  # [http] secret: shared by every node

    def http(node: str) -> dict[str, object]:
        return {"port": ports[node], "public_url": urls[node], "secret": secret}

    node_1 = await mft_stack(
        http=http("node_1"),
        cluster={"nodes": {"node_2": urls["node_2"]}},
        database={"url": db_1},
    )
    node_2 = await mft_stack(
        node={"id": "node_2"},
        xmpp={"component_jid": NODE2_COMPONENT_JID},
        http=http("node_2"),
        cluster={"nodes": {"node_1": urls["node_1"]}},
        repository={"url": f"file://{own}/repo"},
        database={"url": db_2, "spool_path": f"{own}/spool"},
        # Its JID is not under the users' domain "localhost": allow them explicitly.
        upload={"allowed_domains": ["localhost"]},
    )
    assert node_1.root != node_2.root
    return Cluster(node_1, node_2)


async def test_get_at_the_wrong_node_is_redirected_and_logged_by_the_owner(
    cluster: Cluster, xmpp_client: ClientFactory
) -> None:
    """GET at node_2 -> 307 to node_1 (path, ticket kept); node_1 serves and logs it alone."""
    n1, n2 = cluster.node_1, cluster.node_2
    client = await xmpp_client()
    body = b"stored on node_1 only\n" * 100
    up = await n1.upload(client, "rapport final é.pdf", body)
    assert up.get_url.startswith(n1.cfg.http.public_url + "/node_1/im/")
    assert (n1.root / up.path.repo_path).read_bytes() == body
    assert n2.stored() == []

    # node_2's component signs a ticket for node_1's URL; the link points at node_1.
    ticket_url = await personal_url(client, up.get_url, service=NODE2_COMPONENT_JID)
    assert ticket_url.startswith(up.get_url + "?")
    wrong = cluster.at_node_2(ticket_url)
    async with n2.http.get(wrong, allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["Location"] == ticket_url
    # Following the redirect: node_1 checks the ticket (shared secret) and serves.
    async with n2.http.get(wrong) as resp:
        assert resp.status == 200 and await resp.read() == body
        assert [r.url for r in resp.history] == [wrong]
    row = await n1.next_row()
    assert (row.method, row.jid, row.node_id) == ("GET", client.boundjid.bare, "node_1")
    assert [r.method for r in await n1.rows()] == ["POST", "GET"]
    assert await n2.rows() == []


async def test_put_at_the_wrong_node_is_redirected_as_a_put(
    cluster: Cluster, xmpp_client: ClientFactory
) -> None:
    """A PUT for node_1's slot sent to node_2 is a 307 (method kept) and lands on node_1."""
    n1, n2 = cluster.node_1, cluster.node_2
    client = await xmpp_client()
    body = b"sent to the wrong node first"
    put_url, get_url = slot_urls(await ask_slot(client, "wrong door.txt", len(body)))
    wrong = cluster.at_node_2(put_url)
    async with n2.http.put(wrong, data=body, allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["Location"] == put_url
    assert n2.stored() == [] and n1.stored() == []
    # aiohttp follows a 307 with the same method and body.
    async with n2.http.put(wrong, data=body) as resp:
        assert resp.status == 201
        assert [(r.method, r.status) for r in resp.history] == [("PUT", 307)]
    row = await n1.next_row()
    assert (row.method, row.node_id, row.real_filename) == ("POST", "node_1", "wrong door.txt")
    assert await n1.get(get_url) == (200, body)
    assert await n2.rows() == []


async def test_unknown_node_is_404_on_both_nodes(cluster: Cluster) -> None:
    """A URL naming a node in neither [cluster] list is 404, for GET and PUT, no row."""
    path = "/node_9/im/20240102/10/AAAAAAAAAAAAAAAAAAAAAAAA/x.txt"
    for stack in (cluster.node_1, cluster.node_2):
        url = stack.cfg.http.public_url + path
        async with aiohttp.ClientSession() as http:
            async with http.get(url, allow_redirects=False) as resp:
                assert resp.status == 404
            async with http.put(url + "?t=1", data=b"x", allow_redirects=False) as resp:
                assert resp.status == 404
        assert await stack.rows() == []
