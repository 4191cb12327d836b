"""Slot paths: URL shape, repository layout and the ``HH.n`` roll-over (DESIGN.md, seed).

``{node}/{chat_type}/{YYYYMMDD}/{HH[.n]}/{resource}/{filename}`` in URLs and
``files/{chat_type}/{YYYYMMDD}/{HH[.n]}/{resource}`` in the repository. A filesystem
path is only ever built from the validated segments here, never from a file name.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from component.errors import InvalidRequest

ChatType = Literal["im", "groupchat", "persistent"]
CHAT_TYPES: tuple[ChatType, ...] = ("im", "groupchat", "persistent")
RESOURCE_BYTES = 18  # 144 random bits; DESIGN.md asks for at least 128
MAX_FILENAME_CHARS = 1000
REAL_FILENAME_MAX = 511  # AFT_LOG.REAL_FILENAME
FILE_TYPE_MAX = 10  # AFT_LOG.FILE_TYPE
# Unicode bidirectional embeddings/overrides (LRE RLE PDF LRO RLO) and isolates
# (LRI RLI FSI PDI): they reorder how a name is shown, e.g. to disguise its extension.
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
# One scan each instead of a Python test per character (check_filename runs per slot).
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What quote(safe="") leaves as it is: a name of only these is its own URL segment.
_URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"

# Each segment's shape, defined once: URLs, the repository walk and [node] id use them.
DATE_PATTERN = r"\d{8}"
HOUR_PATTERN = r"(?:[01]\d|2[0-3])(?:\.[1-9]\d{0,5})?"  # HH, then HH.1, HH.2, ...
RESOURCE_PATTERN = r"[A-Za-z0-9_-]{22,64}"
NODE_PATTERN = r"[A-Za-z0-9_-]{1,128}"  # seed: "alphanumeric, dash, and underscore"
_DATE_RE = re.compile(rf"^{DATE_PATTERN}$")
_HOUR_RE = re.compile(rf"^{HOUR_PATTERN}$")
_RESOURCE_RE = re.compile(rf"^{RESOURCE_PATTERN}$")
NODE_RE = re.compile(rf"^{NODE_PATTERN}$")
# files/{chat_type}/{YYYYMMDD}/{HH[.n]}/ at the start of a path in the node directory.
_HOUR_DIR_RE = re.compile(rf"^files/(?:{'|'.join(CHAT_TYPES)})/{DATE_PATTERN}/{HOUR_PATTERN}/")
StoredKind = Literal["file", "part", "other"]


def classify(path: str) -> StoredKind:
    """What a path relative to the node directory is: a published ``file``, a ``part``
    file an upload left in its hour directory, or ``other`` (not the service's)."""
    m = _HOUR_DIR_RE.match(path)
    if not m:
        return "other"
    name = path[m.end() :]
    if _RESOURCE_RE.match(name):
        return "file"
    if name.startswith(".") and name.endswith(".part") and "/" not in name:
        return "part"
    return "other"


def new_resource() -> str:
    """A fresh URL-safe resource name with 144 random bits."""
    return secrets.token_urlsafe(RESOURCE_BYTES)


def check_filename(name: str) -> str:
    """Return ``name`` if it can be a file name in a URL, else raise.

    Only the URL carries the user's name; the repository uses the resource name.

    :raises InvalidRequest: empty, ``.``/``..``, a ``/``, a C0 or C1 control character
        (U+0000-U+001F, U+007F-U+009F), a bidirectional override or isolate
        (U+202A-U+202E, U+2066-U+2069), or too long.
    """
    # Most names pass: str.isprintable() is False for every C0/C1 control and every
    # bidirectional control (Unicode "Other"), so a printable name without "/" passes
    # the checks below; the others (and their messages) go through them one by one.
    if (
        0 < len(name) <= MAX_FILENAME_CHARS
        and name.isprintable()
        and "/" not in name
        and name not in (".", "..")
    ):
        return name
    if not name or name in (".", ".."):
        raise InvalidRequest("Invalid filename")
    if "/" in name:
        raise InvalidRequest("Invalid filename: it may not contain '/'")
    if _CONTROL_RE.search(name):
        # C1 too: NEL (U+0085) breaks lines, CSI (U+009B) drives terminals (mft log).
        raise InvalidRequest("Invalid filename: control characters are not allowed")
    if _BIDI_RE.search(name):
        # "invoice\u202efdp.exe" shows as "invoiceexe.pdf": the real extension hidden.
        raise InvalidRequest(
            "Invalid filename: bidirectional override and isolate characters are not allowed"
        )
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidRequest(f"Invalid filename: longer than {MAX_FILENAME_CHARS} characters")
    return name


def quote_filename(name: str) -> str:
    """``name`` as one URL path segment: ``quote(name, safe="")``, skipped when it would
    change nothing (most names)."""
    return name if not name.strip(_URL_SAFE) else quote(name, safe="")


def file_type(name: str) -> str:
    """AFT_LOG FILE_TYPE: the lowercased extension, cut to 10 characters (``''`` if none)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext:
        return ""
    return ext.lower()[:FILE_TYPE_MAX]


def real_filename(name: str) -> str:
    """AFT_LOG REAL_FILENAME: the user's name cut to the column size."""
    return name[:REAL_FILENAME_MAX]


@dataclass(frozen=True, slots=True)
class SlotPath:
    """Where one upload lives, in the URL and in the repository."""

    node: str
    chat_type: ChatType
    date: str
    hour: str
    resource: str
    filename: str

    @classmethod
    def parse(
        cls, node: str, chat_type: str, date: str, hour: str, resource: str, filename: str
    ) -> SlotPath:
        """Validate URL segments (already percent-decoded) strictly.

        :raises InvalidRequest: any segment has the wrong shape (path tricks included).
        """
        if (
            not NODE_RE.match(node)
            or chat_type not in CHAT_TYPES
            or not _DATE_RE.match(date)
            or not _HOUR_RE.match(hour)
            or not _RESOURCE_RE.match(resource)
        ):
            raise InvalidRequest("Malformed file path")
        check_filename(filename)
        return cls(node, chat_type, date, hour, resource, filename)

    @property
    def signed_path(self) -> str:
        """The canonical text the HMAC tokens cover (file name not percent-encoded)."""
        return "/".join(
            (self.node, self.chat_type, self.date, self.hour, self.resource, self.filename)
        )

    @property
    def url_path(self) -> str:
        """The path part of the URL, after ``public_url``; the file name percent-encoded."""
        return "/".join(
            (
                self.node,
                self.chat_type,
                self.date,
                self.hour,
                self.resource,
                quote_filename(self.filename),
            )
        )

    @property
    def repo_path(self) -> str:
        """The file's path relative to the node's repository directory."""
        return f"files/{self.chat_type}/{self.date}/{self.hour}/{self.resource}"

    @property
    def hour_dir(self) -> str:
        """The hour directory relative to the repository directory."""
        return f"files/{self.chat_type}/{self.date}/{self.hour}"


class DirectoryAllocator:
    """Picks ``YYYYMMDD/HH[.n]`` for new slots: ``HH.n`` after every ``per_dir`` slots.

    Counts slots issued by this process per chat type and UTC hour. Counting slots (not
    finished uploads) may roll over a little early, never late. After a restart the
    component seeds the counts from AFT_LOG with :meth:`seed`
    (:meth:`~component.xmpp.service.UploadComponent.resume_directories`).
    """

    def __init__(self, per_dir: int = 1000) -> None:
        self._per_dir = per_dir
        self._counts: dict[tuple[str, str, str], int] = {}
        self._hour_no = -1  # the UTC hour (seconds // 3600) of _segments
        self._segments = ("", "")

    def seed(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Start from known counts keyed by ``(chat_type, YYYYMMDD, HH)``."""
        for key, n in counts.items():
            self._counts[key] = max(self._counts.get(key, 0), n)

    def allocate(self, chat_type: ChatType, now: datetime | None = None) -> tuple[str, str]:
        """Return ``(YYYYMMDD, HH or HH.n)`` for one more file of ``chat_type``."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        date, hour = f"{now.year:04d}{now.month:02d}{now.day:02d}", f"{now.hour:02d}"
        return self._count(chat_type, date, hour)

    def allocate_at(self, chat_type: ChatType, timestamp: float) -> tuple[str, str]:
        """:meth:`allocate` at ``timestamp`` (``time.time()``), the UTC hour's text
        computed once per hour rather than once per slot."""
        hour_no = int(timestamp // 3600)
        if hour_no != self._hour_no:
            at = datetime.fromtimestamp(hour_no * 3600, UTC)
            self._segments = (f"{at.year:04d}{at.month:02d}{at.day:02d}", f"{at.hour:02d}")
            self._hour_no = hour_no
        return self._count(chat_type, *self._segments)

    def _count(self, chat_type: ChatType, date: str, hour: str) -> tuple[str, str]:
        key = (chat_type, date, hour)
        n = self._counts.get(key)
        if n is None:  # a new hour (or chat type): forget the hours before
            self._counts = {k: v for k, v in self._counts.items() if k[1:] == (date, hour)}
            n = 0
        self._counts[key] = n + 1
        roll = n // self._per_dir
        return date, hour if roll == 0 else f"{hour}.{roll}"
