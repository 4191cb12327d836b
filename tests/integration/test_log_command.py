"""``mft log`` as a user runs it (``python -m component log -c FILE``) on each back-end."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from component.audit import COLUMNS, open_audit_log
from component.config import load_config
from tests.fixtures.common import free_port
from tests.unit.test_spool import rec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def toml_config(path: Path, database_url: str) -> Path:
    """Write a minimal mft.toml using ``database_url``; JSON strings are valid TOML strings."""
    q = json.dumps
    path.write_text(
        f"[xmpp]\ncomponent_jid = {q('upload.example.test')}\nsecret = {q('s' * 16)}\n"
        f"[http]\npublic_url = {q('http://127.0.0.1:5443')}\nsecret = {q('h' * 32)}\n"
        f"[repository]\nurl = {q('file://' + str(path.parent / 'repo'))}\n"
        f"[database]\nurl = {q(database_url)}\nspool_path = {q(str(path.parent / 'spool'))}\n"
    )
    return path


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
async def config_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """An mft.toml on each back-end, its AFT_LOG holding four rows."""
    if request.param == "mysql":
        url = request.getfixturevalue("mariadb_url")
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgresql_url")
    else:
        url = f"sqlite:///{tmp_path}/aft_log.sqlite3"
    path = toml_config(tmp_path / "mft.toml", url)
    audit = open_audit_log(load_config(path), spool=False)
    await audit.open()
    for r in (
        rec(1),
        replace(rec(2), method="GET", jid="bob@example.test/pc", real_filename="a,b\nc.txt"),
        replace(rec(3), chat_type="groupchat", to_jid="room@conf.example.test"),
        replace(rec(4), jid="carol@example.test", method="GET_INCOMPLETE"),
    ):
        await audit.record(r)
    await audit.close()
    return path


async def mft_log(config: Path, *argv: str) -> tuple[int, str, str]:
    """Run ``python -m component log -c config ARGV``; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "log", "-c", str(config), *argv,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_json_output(config_file: Path) -> None:
    """JSON: objects with the DESIGN column names, filtered by bare JID and method."""
    rc, out, err = await mft_log(config_file, "--jid", "alice@example.test", "--format", "json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["FILENAME"] for r in rows] == ["res1", "res3"]
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["DATE_TIME"] == "2024-05-01T12:00:01.123456Z"
    assert rows[1]["TO_JID"] == "room@conf.example.test" and rows[1]["FILE_SIZE"] == 1003


async def test_csv_output(config_file: Path) -> None:
    """CSV: a header, then the matching rows; awkward file names survive quoting."""
    rc, out, err = await mft_log(config_file, "--method", "GET", "--format", "csv")
    assert rc == 0, err
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert rows[0] == list(COLUMNS)
    assert len(rows) == 2
    assert rows[1][COLUMNS.index("REAL_FILENAME")] == "a,b\nc.txt"
    assert rows[1][COLUMNS.index("JID")] == "bob@example.test/pc"


async def test_table_output(config_file: Path) -> None:
    """Table: aligned columns, dates and chat type filters, a row count."""
    rc, out, err = await mft_log(
        config_file, "--since", "2024-05-01T12:00:02", "--until", "2024-05-02",
        "--chat-type", "im",
    )  # fmt: skip
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[-1] == "(2 rows)"
    header, body = lines[0], lines[1:-1]
    col = header.index("FILENAME")
    assert [ln[col:].split()[0] for ln in body] == ["res2", "res4"]
    assert "GET_INCOMPLETE" in body[1]


async def test_bad_option_and_no_rows(config_file: Path) -> None:
    """A bad date exits 2 naming the option; a filter matching nothing prints zero rows."""
    rc, _out, err = await mft_log(config_file, "--since", "last tuesday")
    assert rc == 2 and "--since" in err
    rc, out, _err = await mft_log(config_file, "--to", "nobody@example.test", "--format", "json")
    assert rc == 0 and json.loads(out) == []


async def test_unreachable_database_exits_1(tmp_path: Path) -> None:
    """With the database down, ``mft log`` exits 1 naming it, without the password."""
    url = f"mysql://mft:s3cret@127.0.0.1:{free_port()}/mft"
    rc, out, err = await mft_log(toml_config(tmp_path / "mft.toml", url))
    assert rc == 1 and out == ""
    assert "Can't connect" in err and "s3cret" not in err
