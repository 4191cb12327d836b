"""The ``mft`` entry point: logging set-up, configuration errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from component.cli import CHATTY_LIBRARIES, main, quiet_libraries
from tests.fixtures.config import make_raw_config, toml_text


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


BAD_KEYS = [
    ({"database": {"url": "mysql://mft:pw@db:99999/mft"}}, "[database] url"),
    ({"database": {"url": "oracle://db/mft"}}, "[database] url: unknown scheme 'oracle'"),
    ({"database": {"url": "mysql://mft:pw@db/mft?tls=1"}}, "[database] url: unknown option"),
    (
        {"repository": {"url": "sftp://u@files.example.com/p", "host_key": "files ssh-rsa x"}},
        "[repository] host_key",
    ),
]


@pytest.mark.parametrize(("sections", "named"), BAD_KEYS)
@pytest.mark.parametrize(
    "argv", [["run"], ["log"], ["check"], ["purge", "--older-than", "1d"], ["speedtest"]]
)
def test_bad_key_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, dict[str, Any]],
    named: str,
    argv: list[str],
) -> None:
    """A malformed database URL or host key: exit 2, one stderr line naming the key."""
    path = tmp_path / "mft.toml"
    path.write_text(toml_text(make_raw_config(tmp_path, **sections)))
    assert main([argv[0], "-c", str(path), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mft: configuration error: ")
    assert named in err and "Traceback" not in err and "mft:pw@" not in err
