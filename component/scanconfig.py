"""``[scan]``: malware scanning of uploads by clamd (ClamAV), one section of the config.

Kept beside :mod:`component.config` (which parses it like every other section) so that
module stays small; the keys are documented in ``deploy/mft.example.toml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from component.errors import ConfigError

# AF_UNIX socket paths are limited to 108 bytes with the terminating NUL (sun_path).
UNIX_PATH_MAX = 107
CLAMD_PORT = 3310


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanConfig:
    """``[scan]``: malware scanning of every upload by clamd (ClamAV) before it is published.

    ``clamd`` empty (the default) means no scanning.
    """

    clamd: str = ""
    # clamd unreachable, timing out or answering an error: refuse the upload (503, fail
    # closed) or publish it with SCAN_RESULT "unscanned".
    on_error: Literal["reject", "accept"] = "reject"
    # Uploads larger than this many bytes are not sent to clamd and are published as
    # "unscanned"; 0: every upload is scanned, and one clamd refuses as larger than its
    # StreamMaxLength is refused (413).
    max_size: int = 0
    connect_timeout: float = 5.0
    # Seconds any single write to clamd, or the wait for its verdict, may take.
    io_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.on_error not in ("reject", "accept"):
            raise ConfigError(f"[scan] on_error {self.on_error!r}: use 'reject' or 'accept'")
        if self.max_size < 0:
            raise ConfigError("[scan] max_size: 0 (scan every upload) or more bytes")
        if not 0 < self.connect_timeout <= 3600 or not 0 < self.io_timeout <= 3600:
            raise ConfigError("[scan] connect_timeout and io_timeout: more than 0, at most 3600 s")
        if not self.clamd:
            return
        parts = urlsplit(self.clamd)
        try:
            tcp = bool(parts.hostname) and parts.path in ("", "/") and (parts.port or 1) > 0
        except ValueError:  # a port that is not a number
            tcp = False
        if not (
            parts.scheme == "unix" and not parts.netloc and parts.path.startswith("/")
        ) and not (parts.scheme == "tcp" and tcp):
            raise ConfigError(
                f"[scan] clamd {self.clamd!r}: use unix:///absolute/path/clamd.ctl or tcp://host:3310"
            )
        if len(os.fsencode(self.socket_path)) > UNIX_PATH_MAX:
            raise ConfigError(f"[scan] clamd: a socket path has at most {UNIX_PATH_MAX} bytes")

    @property
    def enabled(self) -> bool:
        """Whether uploads are scanned."""
        return bool(self.clamd)

    @property
    def socket_path(self) -> str:
        """The clamd socket of a ``unix://`` URL (``""`` for ``tcp://``)."""
        parts = urlsplit(self.clamd)
        return unquote(parts.path) if parts.scheme == "unix" else ""

    @property
    def host(self) -> str:
        """clamd's host for ``tcp://`` (``""`` for ``unix://``)."""
        return urlsplit(self.clamd).hostname or ""

    @property
    def port(self) -> int:
        """clamd's TCP port (3310 unless the URL says otherwise)."""
        return urlsplit(self.clamd).port or CLAMD_PORT
