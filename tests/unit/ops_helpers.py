"""Small helpers shared by the operations unit tests."""

from __future__ import annotations

from pathlib import Path

from component.config import Config
from tests.fixtures.config import ConfigFactory


def blocked_path(tmp_path: Path) -> Path:
    """A regular file where a directory is expected: nothing can be created below it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    return blocker


def unusable_repository(tmp_path: Path, config_factory: ConfigFactory) -> Config:
    """A config whose file:// repository can never be created."""
    return config_factory(repository={"url": f"file://{blocked_path(tmp_path)}/repo"})
