"""Malware scanning of uploads with clamd, in the same pass that stores them.

:meth:`Scanner.scan` opens one INSTREAM per upload; :meth:`UploadScan.wrap` passes the
body's chunks on to the repository unchanged while it streams each to clamd, and at the
end of the body, *before* the repository publishes anything, waits for the verdict and
raises if the file must not be published. A repository's ``store()`` exhausts its
chunks before it renames the ``.part`` file, and removes the part file on any error from
them: the verdict is known before the file is published and before the POST row.

``result`` (AFT_LOG's SCAN_RESULT) is ``clean``, the signature name, ``unscanned``
(``[scan] on_error = "accept"`` while clamd failed, or larger than ``[scan] max_size``),
or empty when scanning is off.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from component.config import ScanConfig
from component.errors import Infected, ScanUnavailable, TooLargeToScan, UploadError
from component.metrics import Metrics
from httpd.scan.clamd import Instream, ping, version

log = logging.getLogger(__name__)

CLEAN = "clean"
UNSCANNED = "unscanned"


class UploadScan:
    """The scan of one upload; :attr:`result` is final once :meth:`wrap` has ended."""

    def __init__(self, scanner: Scanner, stream: Instream | None, result: str) -> None:
        self._scanner = scanner
        self._stream = stream
        # A refusal that waits for the end of the body, so the client reads the answer.
        self._refusal: UploadError | None = None
        self.result = result

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` unchanged, each streamed to clamd before it is passed on.

        :raises Infected: at the end of the body, when clamd found a signature.
        :raises TooLargeToScan: at the end of the body, past clamd's StreamMaxLength.
        :raises ScanUnavailable: clamd failed (at once) and ``on_error = "reject"``.
        """
        async for chunk in chunks:
            if self._stream is not None:
                try:
                    await self._stream.send(chunk)
                except UploadError as exc:
                    self._failed(exc)
            yield chunk
        await self._finish()

    async def _finish(self) -> None:
        """Read the verdict (timed: scan_seconds) and turn it into the result or a refusal."""
        if self._stream is not None:
            started = time.monotonic()
            try:
                verdict = await self._stream.verdict()
            except UploadError as exc:
                self._failed(exc)
            else:
                self._scanner.observe(time.monotonic() - started)
                self.close()
                if verdict.infected:
                    self.result = verdict.signature
                    self._scanner.count_infected(verdict.signature)
                    raise Infected(verdict.signature)
                self.result = CLEAN
                self._scanner.count("clean")
        if self._refusal is not None:
            raise self._refusal

    def _failed(self, exc: UploadError) -> None:
        """clamd failed mid-scan: refuse (now, or at the end of the body) or go on unscanned."""
        self.close()
        if isinstance(exc, TooLargeToScan):
            self._scanner.count_error("too_large")
            log.warning(
                "upload larger than clamd's StreamMaxLength refused (raise it, or set"
                " [scan] max_size to accept such files unscanned)"
            )
            self._refusal = exc
            return
        self.result = self._scanner.failed(exc)

    def close(self) -> None:
        """Drop the clamd connection (idempotent)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class Scanner:
    """Scans uploads with the clamd of ``[scan]``; a pass-through when none is configured."""

    def __init__(self, cfg: ScanConfig, metrics: Metrics) -> None:
        self._cfg = cfg
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        """Whether uploads are scanned."""
        return self._cfg.enabled

    @property
    def accept_on_error(self) -> bool:
        """``[scan] on_error = "accept"``: publish unscanned while clamd fails."""
        return self._cfg.on_error == "accept"

    async def announce(self) -> None:
        """Log at start-up whether uploads are scanned and whether clamd answers."""
        if not self.enabled:
            log.info("malware scanning off (no [scan] clamd)")
            return
        try:
            found = await version(self._cfg)
        except ScanUnavailable as exc:
            effect = "published unscanned" if self.accept_on_error else "refused (503)"
            log.warning("malware scanner not answering: %s; uploads are %s", exc.text, effect)
            return
        log.info("malware scanning with %s: %s", self._cfg.clamd, found.engine)

    async def ready(self) -> None:
        """For ``Expect: 100-continue``: check clamd answers before the body is sent.

        :raises ScanUnavailable: it does not and ``on_error = "reject"``.
        """
        if self.enabled and not self.accept_on_error:
            try:
                await ping(self._cfg)
            except ScanUnavailable as exc:
                self.failed(exc)

    @contextlib.asynccontextmanager
    async def scan(self, size: int) -> AsyncIterator[UploadScan]:
        """Start the scan of an upload of ``size`` bytes; the connection is closed after.

        :raises ScanUnavailable: clamd cannot be reached and ``on_error = "reject"``.
        """
        if not self.enabled:
            upload = UploadScan(self, None, "")
        elif self._cfg.max_size and size > self._cfg.max_size:
            self.count(UNSCANNED)
            log.info("upload of %d bytes over [scan] max_size: not scanned", size)
            upload = UploadScan(self, None, UNSCANNED)
        else:
            try:
                upload = UploadScan(self, await Instream.open(self._cfg), "")
            except ScanUnavailable as exc:
                upload = UploadScan(self, None, self.failed(exc))
        try:
            yield upload
        finally:
            upload.close()

    def failed(self, exc: UploadError) -> str:
        """The policy for a failed scan: raise (fail closed) or the result ``unscanned``.

        :raises ScanUnavailable: ``on_error = "reject"``.
        """
        self.count_error("unavailable")
        if not self.accept_on_error:
            log.error("malware scan failed, upload refused: %s", exc.text)
            raise ScanUnavailable() from exc
        log.warning("malware scan failed, upload accepted unscanned: %s", exc.text)
        self.count(UNSCANNED)
        return UNSCANNED

    def count(self, result: str) -> None:
        """Count one upload by scan result (``clean``, ``infected``, ``unscanned``)."""
        self._metrics.inc("scans", labels={"result": result})

    def count_infected(self, signature: str) -> None:
        """Count one infected upload, by signature."""
        self.count("infected")
        self._metrics.inc("scan_infected", labels={"signature": signature})

    def count_error(self, reason: str) -> None:
        """Count one failed scan (``unavailable``: clamd failed; ``too_large``)."""
        self._metrics.inc("scan_errors", labels={"reason": reason})

    def observe(self, seconds: float) -> None:
        """Record how long clamd took to answer after the last byte."""
        self._metrics.observe("scan_seconds", value=seconds)
