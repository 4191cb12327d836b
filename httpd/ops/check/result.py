"""One line of ``mft check`` and the small helpers every check uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["OK", "WARN", "FAIL"]
STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
COMPONENT_NS = "jabber:component:accept"
XMPP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
PROBE_SIZE = 64 * 1024
MIN_FREE_PERCENT = 10.0  # WARN below this even when the alarm threshold is lower


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One printed line of ``mft check``."""

    status: Status
    name: str
    detail: str
    hint: str = ""

    def line(self) -> str:
        """``OK    name              detail  hint: ...``."""
        text = f"{self.status:<4}  {self.name:<16}  {self.detail}"
        return f"{text}  hint: {self.hint}" if self.hint else text


def os_reason(exc: OSError) -> str:
    """``connection refused`` rather than asyncio's "Connect call failed (...)"."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__
