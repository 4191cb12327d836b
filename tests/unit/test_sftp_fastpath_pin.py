"""The asyncssh fast path is written against one asyncssh release: the pinned one."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from httpd.repository import sftp_fastpath

ROOT = Path(__file__).resolve().parents[2]


def test_fast_path_is_written_for_the_pinned_asyncssh() -> None:
    """A new asyncssh in constraints.txt fails here: re-read the private attributes and
    functions sftp_fastpath replaces (connection.send_packet, _recv_packet,
    channel._flush_send_buf, SFTP _make_request) before moving PINNED_ASYNCSSH."""
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert pins["asyncssh"] == sftp_fastpath.PINNED_ASYNCSSH == asyncssh.__version__
    assert sftp_fastpath.ENABLED
