"""The component resumes the ``HH.n`` roll-over from AFT_LOG when it starts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from component.errors import AuditUnavailable
from component.metrics import Metrics
from component.xmpp.service import UploadComponent
from tests.fakes import FakeAudit
from tests.fixtures.config import ConfigFactory

NOW = datetime(2024, 5, 1, 10, 40, tzinfo=UTC)

Make = Callable[[FakeAudit], UploadComponent]


@pytest.fixture
async def component(config_factory: ConfigFactory) -> AsyncIterator[Make]:
    """``component(audit)``: an UploadComponent (never connected) with 2 files per dir."""
    made: list[UploadComponent] = []

    def make(audit: FakeAudit) -> UploadComponent:
        cfg = config_factory(repository={"files_per_directory": 2})
        made.append(UploadComponent(cfg, audit, Metrics()))
        return made[-1]

    yield make
    for xmpp in made:
        await xmpp.close()


async def test_counts_from_aft_log_continue_the_hour(component: Make) -> None:
    """Two im uploads this hour: the next im file goes to HH.1; groupchat starts in HH."""
    xmpp = component(FakeAudit(by_chat_type={"im": 2, "persistent": 5}))
    await xmpp.resume_directories(NOW)
    alloc = xmpp._allocator
    assert alloc.allocate("im", NOW) == ("20240501", "10.1")
    assert alloc.allocate("groupchat", NOW) == ("20240501", "10")
    assert alloc.allocate("persistent", NOW) == ("20240501", "10.2")


async def test_failing_audit_only_warns(component: Make, caplog: pytest.LogCaptureFixture) -> None:
    """AFT_LOG down at start: a warning, and counting starts from zero."""
    caplog.set_level(logging.WARNING, logger="component.xmpp.service")
    xmpp = component(FakeAudit(fail=AuditUnavailable("database down")))
    await xmpp.resume_directories(NOW)
    assert xmpp._allocator.allocate("im", NOW) == ("20240501", "10")
    assert "roll-over counts from zero" in caplog.text
