"""The slot reply as one prebuilt string: the fast path of every slot request.

Building the reply with slixmpp (``iq.reply()``, stanza plugins, ``tostring``) costs
more CPU than everything else a slot request does: the stanza machinery creates
several objects per element and ``tostring`` escapes attribute values one character at
a time. The reply's shape is fixed, so it is written here from a template; the values
are escaped with one ``str.translate`` each. The text is exactly what slixmpp would
send, element for element (tests parse both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from component.xmpp.stanza import NS, NS_LEGACY

log = logging.getLogger("component.xmpp.service")  # the component's lines, one logger

# The five XML special characters, "&" first; enough for attribute values in either
# quote style and for character data.
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&apos;"))


def escape(value: str) -> str:
    """``value`` safe inside an XML attribute (double quotes) or element text."""
    # str.replace runs at C speed and returns at once when the character is absent
    # (str.translate looks every character up in a dict).
    for char, entity in _ESCAPES:
        if char in value:
            value = value.replace(char, entity)
    return value


class ReplyWriter:
    """Writes prebuilt stanzas to the stream, those of one batch in one write.

    A batch is what is written between :meth:`hold` and :meth:`release` (the replies
    answered while one read from the server is parsed; :meth:`batch` as a block), else
    one loop iteration. With many requests in flight their replies go out in one
    ``send()`` system call instead of one each, and a lone request's reply leaves at
    once, in the iteration that read the request. What may wait until the replies
    are on their way (counting, logging) is done by ``after_write``, called after each
    write.

    :param transport: the stream's transport (None while disconnected).
    :param loop: the event loop the writes are flushed on.
    :param after_write: called after the stanzas of a batch were handed to the transport.
    """

    def __init__(
        self,
        transport: Callable[[], asyncio.WriteTransport | None],
        loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop,
        after_write: Callable[[], None] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self.after_write = after_write
        self._pending: list[bytes] = []
        self._batching = False
        self._scheduled = False

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the writes are flushed on."""
        return self._loop()

    def write(self, stanza: str) -> bool:
        """Queue ``stanza`` for the end of this batch; False if disconnected."""
        if self._transport() is None:
            return False
        self._pending.append(stanza.encode())
        if not self._batching and not self._scheduled:
            self._scheduled = True
            self._loop().call_soon(self._flush)
        return True

    def hold(self) -> None:
        """Start a batch: what is written from now on waits for :meth:`release`."""
        self._batching = True

    def release(self) -> None:
        """End the batch: write what it holds at once (then ``after_write``)."""
        self._batching = False
        self._flush()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold what is written inside until the end of the block, then write it at once."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def _flush(self) -> None:
        self._scheduled = False  # a flush still scheduled finds nothing, or newer stanzas
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        transport = self._transport()
        if transport is not None:
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self.after_write is not None:
            try:
                self.after_write()
            except Exception:  # counting must not take the stream down with it
                log.exception("bookkeeping after a write of replies failed")


def slot_reply(request_attrs: dict[str, str], namespace: str, put_url: str, get_url: str) -> str:
    """The ``<iq type='result'>`` carrying a slot, for a request with these attributes.

    :param request_attrs: the request ``<iq>``'s attributes (``id``, ``from``, ``to``);
        the reply swaps ``from`` and ``to`` and keeps ``id``, as ``iq.reply()`` does.
    :param namespace: ``urn:xmpp:http:upload:0`` (attributes) or the legacy
        ``urn:xmpp:http:upload`` (child elements), as the request used.
    """
    return slot_reply_xml(request_attrs, namespace, escape(put_url), escape(get_url))


def slot_reply_xml(request_attrs: dict[str, str], namespace: str, put: str, get: str) -> str:
    """:func:`slot_reply` for URLs already escaped (``put``, ``get``: :func:`escape` of
    the URLs, or text known to be equal to it)."""
    head = (
        f'<iq type="result" id="{escape(request_attrs.get("id", ""))}"'
        f' to="{escape(request_attrs.get("from", ""))}"'
        f' from="{escape(request_attrs.get("to", ""))}">'
    )
    if namespace == NS_LEGACY:
        body = f'<slot xmlns="{NS_LEGACY}"><put>{put}</put><get>{get}</get></slot>'
    else:
        # No <header>: the credential is in the URL (Gajim aborts on unknown headers,
        # several clients drop them).
        body = f'<slot xmlns="{NS}"><put url="{put}" /><get url="{get}" /></slot>'
    return head + body + "</iq>"


class SlotTally:
    """Slots handed out, logged as one INFO line per interval rather than one per slot.

    A line per slot cost about a tenth of the component's CPU per request. The slot
    itself is no AFT_LOG row: the upload made with it is (and is logged at INFO by the
    HTTP side), refusals are still logged one by one, and each slot is logged at DEBUG.
    The line for an interval is written when it ends (a timer started by its first slot),
    or at :meth:`flush`.

    :param interval: seconds one summary line covers.
    :param loop: the event loop of the timer.
    """

    def __init__(
        self,
        interval: float = 60.0,
        loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop,
    ) -> None:
        self.interval = interval
        self._loop = loop
        self._counts: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, chat_type: str, n: int = 1) -> None:
        """Count ``n`` slots of ``chat_type``."""
        self._counts[chat_type] += n
        if self._timer is None:
            self._timer = self._loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Log the slots counted so far (if any) and start counting from zero."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, Counter()
        if counts:
            log.info(
                "slots handed out in the last %g s: %d (%s)",
                self.interval,
                counts.total(),
                ", ".join(f"{ct} {n}" for ct, n in sorted(counts.items())),
            )
