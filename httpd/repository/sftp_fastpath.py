"""A narrow fast path through asyncssh for the ``sftp://`` repository's transfers.

asyncssh 2.24 copies every byte of an SFTP WRITE about a dozen times on its way out (the
SFTP framing joins, the channel's send-buffer copy and slices, the channel and SSH
packet joins, padding and MAC concatenations), sends an ``SSH_MSG_IGNORE`` packet in
front of every packet (a countermeasure for CBC ciphers, whose IV is chained; an AEAD
cipher has a fresh nonce per packet and gains nothing), and hands each packet to the
socket with a ``send()`` of its own. On the way in it slices the rest of its input
buffer off after every packet (a copy of everything behind that packet, each time).

With AES-GCM (what ``sftp_session`` prefers) this module seals a CHANNEL_DATA packet
from a view of the channel's buffer with one join and one ``AESGCM.encrypt``; the
packets of one flush, or of one socket read's window adjusts, leave in one ``send()``;
SFTP WRITE requests are queued as a header and a view of the block (:func:`write`). Incoming
packets are split from a view of the socket read (the length is in the clear under GCM)
and CHANNEL_DATA and WINDOW_ADJUST for our channel are decrypted with ``decrypt_into``
into a buffer of their own and handed to the channel as asyncssh would.

Everything else (key exchange and rekeying, authentication, other packet types, other
ciphers, compression, packet logging at asyncssh's debug level 3) stays asyncssh's: the
fast path is taken per packet only when none of that applies, and asyncssh's own code
runs otherwise (an incoming packet whole, at a packet boundary). It reaches into
asyncssh's private attributes, so it is installed only on the pinned version
(:data:`PINNED_ASYNCSSH`; a unit test keeps it equal to ``constraints.txt``), on our own
connection and channel objects (their class is swapped for a subclass here), and nothing
else in the process changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncssh
from asyncssh.channel import SSHClientChannel
from asyncssh.connection import SSHClientConnection
from asyncssh.constants import (
    FXP_STATUS,
    FXP_WRITE,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_USERAUTH_LAST,
)
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import GCMEncryption
from asyncssh.sftp import SFTPClientFile, SFTPNoConnection
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

PINNED_ASYNCSSH = "2.24.1"
ENABLED = asyncssh.__version__ == PINNED_ASYNCSSH

_GCM_TAG = 16
# Random padding is drawn from a pool: one getrandom() per packet was a tenth of the
# packet's own Python cost.
_PAD_POOL = 4096
_CHANNEL_DATA = bytes([MSG_CHANNEL_DATA])
_FXP_WRITE = bytes([FXP_WRITE])
# Channel states in which asyncssh takes a window adjust.
_ADJUSTABLE = frozenset({"open", "eof_pending", "eof"})

Buffer = bytes | bytearray | memoryview


class _FastConnection(SSHClientConnection):
    """asyncssh's client connection with an AES-GCM send path (installed by class swap)."""

    _mft_cork: list[bytes] | None
    _mft_aead: tuple[GCMCipher, AESGCM] | None
    _mft_pad: bytes
    _mft_pad_at: int
    _mft_recv_aead: tuple[GCMCipher, AESGCM] | None

    def _mft_init(self) -> None:
        self._mft_cork = None
        self._mft_aead = self._mft_recv_aead = None
        self._mft_pad = b""
        self._mft_pad_at = 0

    def mft_cipher(self) -> GCMCipher | None:
        """The GCM cipher if the next packet may take the fast path, else ``None``: only
        after key exchange and authentication, with no rekey due and no compression,
        and with asyncssh's packet logging off."""
        enc = self._send_encryption
        if (
            type(enc) is not GCMEncryption
            or not (self._kex_complete and self._auth_complete)
            or self._compressor is not None
            or self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)
            or self._logger._debug_level >= 3
        ):
            return None
        cipher: GCMCipher = enc._cipher
        return cipher

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        """asyncssh's ``send_packet``, sealed here for data-phase packets under AES-GCM."""
        cipher = self.mft_cipher() if pkttype > MSG_USERAUTH_LAST else None
        if cipher is None:
            super().send_packet(pkttype, *args, handler=handler)
        else:
            self.mft_seal(cipher, (bytes([pkttype]), *args))

    def mft_seal(self, cipher: GCMCipher, parts: Sequence[Buffer]) -> None:
        """Frame ``parts`` (the packet type first) as one SSH packet, encrypt and send it.

        The same bytes as asyncssh's ``send_packet`` would send, minus its IGNORE packet:
        ``uint32 length || AES-GCM(padlen || payload || random padding) || tag``, with the
        length as associated data, the sequence number and rekey count advanced.
        """
        body = sum(len(p) for p in parts)
        padlen = -(self._send_enchdrlen + body) % self._send_blocksize
        if padlen < 4:
            padlen += self._send_blocksize
        pktlen = 1 + body + padlen
        at = self._mft_pad_at
        if at + padlen > len(self._mft_pad):
            self._mft_pad, at = os.urandom(_PAD_POOL), 0
        self._mft_pad_at = at + padlen
        # One join, no zero-filled buffers: measured the cheapest framing (6.6 µs per
        # 32 KiB packet against 9.2 for encrypt_into a bytearray made for it).
        plain = b"".join((bytes((padlen,)), *parts, self._mft_pad[at : at + padlen]))
        hdr = pktlen.to_bytes(4, "big")
        aead = self._mft_aead
        if aead is None or aead[0] is not cipher:  # a rekey made a new cipher
            aead = self._mft_aead = (cipher, AESGCM(cipher._key))
        out = hdr + aead[1].encrypt(cipher._iv, plain, hdr)
        cipher._update_iv()
        self._send_seq = (self._send_seq + 1) & 0xFFFFFFFF
        self._rekey_bytes_sent += pktlen
        self._send(out)

    def _send(self, data: bytes) -> None:
        if self._mft_cork is not None:
            self._mft_cork.append(data)
        else:
            super()._send(data)

    @contextlib.contextmanager
    def mft_corked(self) -> Iterator[None]:
        """Packets sent inside leave in one ``send()`` at its end (nested: the outermost)."""
        if self._mft_cork is not None:
            yield
            return
        cork = self._mft_cork = []
        try:
            yield
        finally:
            self._mft_cork = None
            if len(cork) == 1:
                super()._send(cork[0])
            elif cork:
                super()._send(b"".join(cork))

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        """Parse what one socket read brought; what it triggers (window adjusts, the
        sends they release) is sent in one ``send()``."""
        with self.mft_corked():
            if type(self._recv_encryption) is not GCMEncryption or self._decompressor:
                super().data_received(data, datatype)
            elif self._recv_handler != self._recv_pkthdr:
                super().data_received(data, datatype)  # asyncssh is inside a packet
            else:
                self._mft_received(data)

    def _mft_received(self, data: bytes) -> None:
        """Split ``data`` into packets (under AES-GCM the length is in the clear) and
        take CHANNEL_DATA for our channels here; any other packet goes to asyncssh's own
        parser whole, one at a time, so its state stays at a packet boundary.

        asyncssh appends each read to its buffer and slices the rest of it off after
        every packet (a copy of everything after that packet, each time); here a packet
        is decrypted from a view of the read into a buffer of its own.
        """
        self._reset_keepalive_timer()
        if self._inpbuf:  # a partial packet from the last read
            data, self._inpbuf = self._inpbuf + data, b""
        view = memoryview(data)
        at, end = 0, len(data)
        try:
            while end - at >= 4:
                if type(self._recv_encryption) is not GCMEncryption or self._decompressor:
                    # A key exchange just changed the framing: asyncssh takes the rest.
                    self._inpbuf = bytes(view[at:])
                    self._recv_data()
                    return
                pktlen = int.from_bytes(view[at : at + 4], "big")
                if pktlen > self._max_recv_pktlen:
                    raise asyncssh.ProtocolError("Max packet size exceeded")
                total = 4 + pktlen + _GCM_TAG
                if end - at < total:
                    break
                packet = view[at : at + total]
                at += total
                if not self._mft_channel_data(packet, pktlen):
                    # asyncssh's parser, on exactly this packet (decrypted again there).
                    self._inpbuf = bytes(packet)
                    self._recv_data()
                    if self._inpbuf or self._recv_handler != self._recv_pkthdr:
                        # It waits for an async handler: it takes the rest as it comes.
                        self._inpbuf += bytes(view[at:])
                        return
        except asyncssh.DisconnectError as exc:
            self._send_disconnect(exc.code, exc.reason, exc.lang)
            self._force_close(exc)
            return
        except Exception:  # as asyncssh's _recv_data: a bug is an internal error
            self.internal_error()
            return
        if at < end:
            self._inpbuf = bytes(view[at:])

    def _mft_channel_data(self, packet: memoryview, pktlen: int) -> bool:
        """Take ``packet`` here if it is CHANNEL_DATA within its window, or a
        WINDOW_ADJUST, for an open channel of ours; ``False`` (nothing consumed, the
        cipher not advanced) otherwise.

        :raises MACError: the packet does not verify.
        """
        enc = self._recv_encryption
        assert isinstance(enc, GCMEncryption)
        if (
            pktlen < 16
            or self._logger._debug_level >= 3
            or not (self._kex_complete and self._auth_complete)
        ):
            return False
        cipher: GCMCipher = enc._cipher
        aead = self._mft_recv_aead
        if aead is None or aead[0] is not cipher:  # a rekey made a new cipher
            aead = self._mft_recv_aead = (cipher, AESGCM(cipher._key))
        plain = bytearray(pktlen)
        try:
            aead[1].decrypt_into(cipher._iv, packet[4:], packet[:4], plain)
        except InvalidTag:
            raise asyncssh.MACError("MAC verification failed") from None
        end = pktlen - plain[0]  # the padding's length
        kind = plain[1]
        chan = self._channels.get(int.from_bytes(plain[2:6], "big"))
        if not isinstance(chan, _FastChannel) or end < 10:
            return False
        n = int.from_bytes(plain[6:10], "big")
        if kind == MSG_CHANNEL_DATA:
            if chan._recv_state != "open" or 10 + n != end or n > chan._recv_window:
                return False  # asyncssh's parser says why
        elif kind == MSG_CHANNEL_WINDOW_ADJUST:
            if chan._recv_state not in _ADJUSTABLE or end != 10:
                return False
        else:
            return False
        cipher._update_iv()
        self._recv_seq = (self._recv_seq + 1) & 0xFFFFFFFF
        self._auth_final = True
        if kind == MSG_CHANNEL_WINDOW_ADJUST:
            chan._send_window += n
            chan._flush_send_buf()
        elif n:
            chan._accept_data(memoryview(plain)[10:end])  # type: ignore[arg-type]
        return True


class _FastChannel(SSHClientChannel[bytes]):
    """asyncssh's client channel whose send-buffer flush seals CHANNEL_DATA packets
    straight from the buffer (installed by class swap).

    Its send buffer may hold memoryviews besides asyncssh's bytearrays: :func:`write`
    queues an SFTP WRITE as its header and a view of the caller's block, not a copy. A
    packet is filled from as many entries as it takes, and a partly sent entry becomes
    a view of its rest (no bytes moved). Before asyncssh's own flush takes over (a
    rekey, another cipher), the views are turned into the bytearrays it expects.
    """

    _send_buf: list[tuple[Any, Any]]

    def _flush_send_buf(self) -> None:
        conn = self._conn
        if not isinstance(conn, _FastConnection) or self._send_chan is None:
            self._mft_slow_flush()
            return
        recipient = self._send_chan.to_bytes(4, "big")
        send_buf = self._send_buf
        with conn.mft_corked():
            while send_buf and self._send_window:
                cipher = conn.mft_cipher()
                if cipher is None or send_buf[0][1] is not None:
                    self._mft_slow_flush()  # asyncssh's own loop does the rest
                    return
                room = min(self._send_window, self._send_pktsize)
                parts: list[memoryview] = []
                n = 0
                while send_buf and n < room and send_buf[0][1] is None:
                    buf = send_buf[0][0]
                    view = buf if type(buf) is memoryview else memoryview(buf)
                    k = min(len(view), room - n)
                    if k == len(view):
                        parts.append(view)
                        del send_buf[0]
                    else:
                        parts.append(view[:k])
                        send_buf[0] = (view[k:], None)
                    n += k
                conn.mft_seal(cipher, (_CHANNEL_DATA, recipient, n.to_bytes(4, "big"), *parts))
                self._send_buf_len -= n
                self._send_window -= n
            self._pause_resume_writing()
            if not send_buf:
                if self._send_state == "eof_pending":
                    self.send_packet(MSG_CHANNEL_EOF)
                    self._send_state = "eof"
                elif self._send_state == "close_pending":
                    self._close_send()

    def _mft_slow_flush(self) -> None:
        """asyncssh's own flush, on the bytearrays it expects (views copied into them)."""
        self._send_buf[:] = [
            (bytearray(buf) if type(buf) is memoryview else buf, datatype)
            for buf, datatype in self._send_buf
        ]
        super()._flush_send_buf()


def install(conn: asyncssh.SSHClientConnection) -> bool:
    """Give ``conn`` the fast send path (before its SFTP sessions start).

    :returns: whether it was installed (only on the pinned asyncssh, on a plain client
        connection).
    """
    if not ENABLED or type(conn) is not SSHClientConnection:
        return False
    conn.__class__ = _FastConnection
    assert isinstance(conn, _FastConnection)
    conn._mft_init()
    return True


def install_sftp(sftp: asyncssh.SFTPClient) -> bool:
    """Give the channel of ``sftp`` the fast flush (its connection must have :func:`install`).

    :returns: whether it was installed.
    """
    writer = sftp._handler._writer
    chan = writer.channel if writer is not None else None
    if not ENABLED or type(chan) is not SSHClientChannel:
        return False
    if not isinstance(chan.get_connection(), _FastConnection):
        return False
    chan.__class__ = _FastChannel
    return True


async def write(f: SFTPClientFile, data: Buffer, offset: int) -> None:
    """One SFTP WRITE of ``data`` at ``offset`` on ``f``, as ``f.write(data, offset)``.

    asyncssh's ``write`` frames the request with three joins and the channel copies it
    once more; here the request's header and a view of ``data`` itself (no copy) go to
    the channel's send buffer (see :class:`_FastChannel`), where asyncssh's ``write``
    would append its copy, and the reply is checked as asyncssh checks it. So ``data``
    must not change until this returns: by then the server has acknowledged all of it.
    If this is cancelled first, what is still queued stays referenced by the channel
    and is sent from ``data`` as it is then.

    :raises SFTPNoConnection: the session is closed.
    :raises BrokenPipeError: the channel is closing.
    :raises SFTPError: the server refused the write (its status, as asyncssh types it).
    """
    handler = f._handler
    writer = handler._writer
    handle = f._handle
    if writer is None or handle is None:
        raise SFTPNoConnection("Connection not open")
    chan = writer.channel
    if chan.is_closing():
        raise BrokenPipeError("Channel not open for sending")
    waiter: asyncio.Future[Any] = handler._loop.create_future()
    pktid = handler._next_pktid
    handler._next_pktid = (pktid + 1) & 0xFFFFFFFF
    n, hlen = len(data), len(handle)
    head = 1 + 4 + 4 + hlen + 8 + 4  # type, id, string handle, uint64 offset, uint32 len
    header = bytearray(
        b"".join(
            (
                (head + n).to_bytes(4, "big"),
                _FXP_WRITE,
                pktid.to_bytes(4, "big"),
                hlen.to_bytes(4, "big"),
                handle,
                offset.to_bytes(8, "big"),
                n.to_bytes(4, "big"),
            )
        )
    )
    handler._requests[pktid] = waiter
    chan._send_buf_len += len(header) + n
    if type(chan) is _FastChannel:
        chan._send_buf.append((header, None))
        if n:
            chan._send_buf.append((memoryview(data).cast("B"), None))
    else:  # asyncssh's own flush, which needs one bytearray (no install_sftp here)
        header += data
        chan._send_buf.append((header, None))
    chan._flush_send_buf()
    resptype, resp = await waiter
    if resptype != FXP_STATUS:
        raise asyncssh.SFTPBadMessage(f"Unexpected response type: {resptype}")
    handler._packet_handlers[resptype](handler, resp)
