"""Injected fakes for unit tests (never of the real servers in integration tests)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from component.audit import AuditQuery, AuditRecord


class FakeAudit:
    """An AuditLog that answers quota and roll-over questions from fixed numbers."""

    def __init__(
        self,
        files: int = 0,
        nbytes: int = 0,
        fail: BaseException | None = None,
        by_chat_type: dict[str, int] | None = None,
    ):
        self.files, self.nbytes, self.fail = files, nbytes, fail
        self.by_chat_type = by_chat_type or {}
        self.uploaded_among_calls: list[list[str]] = []

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    async def server_version(self) -> str:
        """A made-up product."""
        return "FakeDB 1.0"

    async def record(self, rec: AuditRecord) -> None:
        """Rows are not kept."""

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """No upload is ever found."""
        return None

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        """No share is ever found."""
        return None

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """No rows."""
        return []

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        """No upload is ever found; counts the calls (one per quota check)."""
        self.uploaded_among_calls.append(list(resources))
        return set()

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """The fixed usage (or the configured failure)."""
        if self.fail is not None:
            raise self.fail
        return self.files, self.nbytes

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """The fixed per-chat-type counts (or the configured failure)."""
        if self.fail is not None:
            raise self.fail
        return dict(self.by_chat_type)
