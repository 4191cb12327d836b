"""The slot reply as one prebuilt string: the fast path of every slot request.

Building the reply with slixmpp (``iq.reply()``, stanza plugins, ``tostring``) costs
more CPU than everything else a slot request does: the stanza machinery creates
several objects per element and ``tostring`` escapes attribute values one character at
a time. The reply's shape is fixed, so it is written here from a template; the values
are escaped with one ``str.translate`` each. The text is exactly what slixmpp would
send, element for element (tests parse both).
"""

from __future__ import annotations

from component.xmpp.stanza import NS, NS_LEGACY

# The five XML special characters; enough for attribute values in either quote style
# and for character data.
_ESCAPE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"})


def escape(value: str) -> str:
    """``value`` safe inside an XML attribute (double quotes) or element text."""
    return value.translate(_ESCAPE)


def slot_reply(request_attrs: dict[str, str], namespace: str, put_url: str, get_url: str) -> str:
    """The ``<iq type='result'>`` carrying a slot, for a request with these attributes.

    :param request_attrs: the request ``<iq>``'s attributes (``id``, ``from``, ``to``);
        the reply swaps ``from`` and ``to`` and keeps ``id``, as ``iq.reply()`` does.
    :param namespace: ``urn:xmpp:http:upload:0`` (attributes) or the legacy
        ``urn:xmpp:http:upload`` (child elements), as the request used.
    """
    head = (
        f'<iq type="result" id="{escape(request_attrs.get("id", ""))}"'
        f' to="{escape(request_attrs.get("from", ""))}"'
        f' from="{escape(request_attrs.get("to", ""))}">'
    )
    put, get = escape(put_url), escape(get_url)
    if namespace == NS_LEGACY:
        body = f'<slot xmlns="{NS_LEGACY}"><put>{put}</put><get>{get}</get></slot>'
    else:
        # No <header>: the credential is in the URL (Gajim aborts on unknown headers,
        # several clients drop them).
        body = f'<slot xmlns="{NS}"><put url="{put}" /><get url="{get}" /></slot>'
    return head + body + "</iq>"
