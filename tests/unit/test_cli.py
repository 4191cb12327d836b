"""The ``mft`` entry point's logging set-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from component.cli import CHATTY_LIBRARIES, quiet_libraries


@pytest.fixture
def restore_levels() -> Iterator[None]:
    """Put the libraries' logger levels back after the test."""
    saved = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(("verbose", "info_shown"), [(0, False), (1, False), (2, True)])
@pytest.mark.usefixtures("restore_levels")
def test_asyncssh_info_only_with_vv(verbose: int, info_shown: bool) -> None:
    """asyncssh's per-connection INFO lines are hidden unless -vv; its warnings never are."""
    quiet_libraries(verbose)
    logger = logging.getLogger("asyncssh")
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        assert logger.isEnabledFor(logging.INFO) is info_shown
        assert logger.isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger().setLevel(root_level)
