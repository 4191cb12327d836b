"""From a request's URL to a validated :class:`~component.layout.SlotPath` on this node."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from component.errors import NotFound
from component.layout import SlotPath
from httpd.appkeys import CONFIG

# ``{public_url path}/{node}/{chat_type}/{YYYYMMDD}/{HH[.n]}/{resource}/{filename}``
FILE_ROUTE = "/{node}/{chat_type}/{date}/{hour}/{resource}/{filename}"


def slot_path(request: web.Request) -> SlotPath:
    """The request's slot path, every segment checked (aiohttp has percent-decoded them).

    :raises InvalidRequest: a segment has the wrong shape: ``..``, an encoded ``/`` in the
        file name, an unknown chat type, a malformed date, hour or resource.
    """
    mi = request.match_info
    return SlotPath.parse(
        mi["node"], mi["chat_type"], mi["date"], mi["hour"], mi["resource"], mi["filename"]
    )


def redirect_to_owner(request: web.Request, path: SlotPath) -> None:
    """Return if ``path`` belongs to this node; else send the client to the node that has it.

    The path and the query (token or ticket) are passed on unchanged: every node shares
    the secret.

    :raises aiohttp.web.HTTPTemporaryRedirect: 307 to the owner from ``[cluster] nodes``
        (307 keeps the method and body, so a PUT is redirected as a PUT).
    :raises NotFound: the node is not this one and not in ``[cluster] nodes``.
    """
    cfg = request.app[CONFIG]
    if path.node == cfg.node.id:
        return
    base = cfg.cluster.nodes.get(path.node)
    if base is None:
        raise NotFound("No such node")
    location = f"{base.rstrip('/')}/{path.url_path}"
    query = request.rel_url.raw_query_string
    if query:
        location += f"?{query}"
    # encoded=True: the path and query go out byte for byte as they came in (aiohttp
    # would otherwise re-quote the Location, e.g. %40 -> @).
    raise web.HTTPTemporaryRedirect(URL(location, encoded=True))
