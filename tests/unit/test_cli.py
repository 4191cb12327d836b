"""The ``mft`` entry point: logging set-up, configuration errors."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from component.cli import (
    CHATTY_LIBRARIES,
    _SecondsFormatter,
    main,
    quiet_libraries,
    stderr_logging,
)
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


LOGGING_CHILD = """
import logging, os, sys
from component.cli import stderr_logging
log = logging.getLogger("httpd.upload")
args = ["first"]
with stderr_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s"):
    log.debug("not at INFO")
    log.info("args %s", args)
    args[0] = "changed"  # after the call: the line keeps what was logged
    for i in range(2000):
        log.info("record %d", i)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
os.write(2, b"after the block\\n")  # raw: everything logged is out before this
log.warning("late")
"""


def test_stderr_logging_writes_every_record_in_order_by_the_end() -> None:
    """Records appear in order, as they were when logged, with tracebacks, all out
    when the block ends; later records still appear; the level holds."""
    out = subprocess.run(
        [sys.executable, "-c", LOGGING_CHILD], capture_output=True, text=True, check=True
    )
    lines = out.stderr.splitlines()
    assert lines[0] == "INFO httpd.upload: args ['first']"
    assert lines[1:2001] == [f"INFO httpd.upload: record {i}" for i in range(2000)]
    assert lines[2001] == "ERROR httpd.upload: failed"
    assert "ValueError: boom" in out.stderr.split("after the block")[0]
    assert lines[-2:] == ["after the block", "WARNING httpd.upload: late"]
    assert "not at INFO" not in out.stderr


def test_stderr_logging_leaves_configured_logging_alone(caplog: pytest.LogCaptureFixture) -> None:
    """With handlers on the root logger already (here pytest's), nothing is added."""
    root = logging.getLogger()
    before = list(root.handlers)
    with stderr_logging(logging.DEBUG, "%(message)s"):
        assert root.handlers == before
        logging.getLogger("x").warning("seen by the existing handler")
    assert root.handlers == before
    assert "seen by the existing handler" in caplog.text


def test_listener_lines_read_as_basic_config_lines() -> None:
    """The formatter renders asctime as logging.Formatter does (cached per second), so
    the log reads the same as before."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    ours, stdlib = _SecondsFormatter(fmt), logging.Formatter(fmt)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.LogRecord("httpd.upload", logging.INFO, "", 0, "m %d", (1,), None)
        record.created, record.msecs = created, (created % 1) * 1000
        assert ours.format(record) == stdlib.format(record)
