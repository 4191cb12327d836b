"""mft verify, export, hold and a held purge over a real HTTP server, file:// and SQLite."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import subprocess
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from component.audit import AuditQuery
from component.cli import build_parser
from component.errors import StorageUnavailable
from httpd.ops.export import Bundle, export, export_command, safe_name
from httpd.ops.hold import hold_command
from httpd.ops.purge import purge_command
from httpd.ops.verify import Progress, verify, verify_command
from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import HttpdEnv, ObservedRepository, Slot, httpd_env
from tests.unit.ops_helpers import unusable_repository

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"


@pytest.fixture
async def env(config_factory: ConfigFactory) -> AsyncIterator[HttpdEnv]:
    """The HTTP app over a file:// repository and SQLite AFT_LOG."""
    async with httpd_env(config_factory()) as e:
        yield e


async def three_uploads(env: HttpdEnv) -> list[Slot]:
    """Alice -> Bob (downloaded once), Carol -> Bob, Alice -> Carol; small random bodies."""
    slots = [
        await env.upload(os.urandom(3000), "Zürich report.pdf", uploader=ALICE, recipient=BOB),
        await env.upload(os.urandom(5000), "..evil name;\\x.sh", uploader=CAROL, recipient=BOB),
        await env.upload(os.urandom(700), "notes.txt", uploader=ALICE, recipient=CAROL),
    ]
    async with env.client.get(slots[0].get_url) as resp:
        assert resp.status == 200
        await resp.read()
    assert (await env.audit.next_row()).method == "GET"
    return slots


async def run(fn, env: HttpdEnv, argv: list[str], capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Parse ``argv`` as the CLI does, run the command; (exit status, stdout + stderr)."""
    at = 2 if argv[0] == "hold" else 1  # -c follows the command (the hold action)
    args = build_parser().parse_args([*argv[:at], "-c", "unused.toml", *argv[at:]])
    status = await fn(env.cfg, args)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


async def test_verify_clean_repository(env: HttpdEnv, capsys: pytest.CaptureFixture[str]) -> None:
    """Every stored file matches its FILE_SHA256: exit 0, no problem line, a summary."""
    await three_uploads(env)
    part = env.repo.root / "files/im/20240102/10/.inflight.0a1b2c3d.part"
    part.write_bytes(b"upload in progress")  # never an ORPHAN
    status, out = await run(verify_command, env, ["verify"], capsys)
    assert status == 0, out
    assert out.splitlines() == [
        "verified 3 files (8.7 kB): 3 match, 0 problems; 0 purged by retention"
    ]


async def test_verify_finds_tampered_deleted_and_stray_files(
    env: HttpdEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed byte is ALTERED, a deleted file MISSING, a stray file ORPHAN: exit 1."""
    slots = await three_uploads(env)
    posts = {r.filename: r.index for r in await env.rows("POST")}
    tampered = env.repo.root / slots[0].path.repo_path
    data = bytearray(tampered.read_bytes())
    data[100] ^= 1
    tampered.write_bytes(data)
    (env.repo.root / slots[1].path.repo_path).unlink()
    stray = env.repo.root / "files/im/20240102/10/planted.exe"
    stray.write_bytes(b"MZ")
    status, out = await run(verify_command, env, ["verify"], capsys)
    assert status == 1
    assert out.splitlines()[0].split() == ["STATUS", "AFT_INDEX", "RESOURCE", "PATH", "DETAIL"]
    found = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert set(found) == {"ALTERED", "MISSING", "ORPHAN"}
    assert found["ALTERED"][1:4] == [
        str(posts[slots[0].path.resource]),
        slots[0].path.resource,
        slots[0].path.repo_path,
    ]
    assert found["MISSING"][1:3] == [str(posts[slots[1].path.resource]), slots[1].path.resource]
    assert found["ORPHAN"][1:4] == ["-", "planted.exe", "files/im/20240102/10/planted.exe"]
    assert out.splitlines()[-1].startswith("verified 2 files")
    assert "1 ALTERED, 1 MISSING, 1 ORPHAN" in out

    status, out = await run(verify_command, env, ["verify", "--format", "json"], capsys)
    doc = json.loads(out)
    assert status == 1
    assert sorted(p["status"] for p in doc["problems"]) == ["ALTERED", "MISSING", "ORPHAN"]
    assert doc["summary"]["problems"] == {"ALTERED": 1, "MISSING": 1, "ORPHAN": 1}
    assert doc["summary"]["ok"] == 1


async def test_verify_date_range_and_bad_dates(
    env: HttpdEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since in the future checks nothing; a bad date is exit 2."""
    await three_uploads(env)
    status, out = await run(verify_command, env, ["verify", "--since", "2999-01-01"], capsys)
    assert status == 0 and "verified 0 files" in out
    status, out = await run(verify_command, env, ["verify", "--until", "May 1st"], capsys)
    assert status == 2 and "--until" in out


def sha256sum_check(directory: Path) -> str:
    """Run ``sha256sum -c SHA256SUMS`` in ``directory``; its output (fails the test on error)."""
    done = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("kind", ["directory", "zip"])
async def test_export_bundle_verifies_with_sha256sum(
    env: HttpdEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """--jid alice: her two uploads, their rows, files named by index, sha256sum -c passes."""
    slots = await three_uploads(env)
    out = tmp_path / ("case.zip" if kind == "zip" else "case")
    status, text = await run(export_command, env, ["export", "--jid", ALICE, str(out)], capsys)
    assert status == 0, text
    assert "exported 2 uploads (2 files" in text and "3 AFT_LOG rows" in text
    if kind == "zip":
        with zipfile.ZipFile(out) as zf:
            assert zf.testzip() is None
            zf.extractall(tmp_path / "unzipped")
        bundle = tmp_path / "unzipped"
    else:
        bundle = out
    checked = sha256sum_check(bundle)
    posts = [r for r in await env.rows("POST") if r.jid == ALICE]
    names = [f"files/{p.index}_{safe_name(p.real_filename)}" for p in posts]
    assert names[0].endswith("_Zürich_report.pdf")
    assert checked.splitlines() == [f"{n}: OK" for n in names]
    for p, n in zip(posts, names, strict=True):
        assert hashlib.sha256((bundle / n).read_bytes()).hexdigest() == p.file_sha256
    assert (bundle / names[0]).read_bytes() == (
        env.repo.root / slots[0].path.repo_path
    ).read_bytes()
    rows = list(csv.reader(io.StringIO((bundle / "manifest.csv").read_text(), newline="")))
    assert rows[0][:2] == ["AFT_INDEX", "JID"] and rows[0][-3:] == [
        "FILE_SHA256",
        "SCAN_RESULT",
        "BUNDLE_FILE",
    ]
    assert [(r[3], r[-1]) for r in rows[1:]] == [
        ("POST", names[0]),
        ("GET", ""),
        ("POST", names[1]),
    ]
    readme = (bundle / "README.txt").read_text()
    assert "--jid alice@example.test" in readme and "OS user" in readme
    status, text = await run(export_command, env, ["export", str(out)], capsys)
    assert status == 2 and "exists" in text


async def test_export_names_a_gone_file(
    env: HttpdEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--to bob: a deleted file stays in the manifest, is named, and makes the exit 1."""
    slots = await three_uploads(env)
    (env.repo.root / slots[1].path.repo_path).unlink()
    out = tmp_path / "bob"
    status, text = await run(export_command, env, ["export", "--to", BOB, str(out)], capsys)
    assert status == 1
    assert "gone: AFT_INDEX" in text and slots[1].path.resource in text and "missing" in text
    sha256sum_check(out)
    manifest = (out / "manifest.csv").read_text()
    assert slots[1].path.resource in manifest and len(list((out / "files").iterdir())) == 1
    assert "Files no longer in the repository" in (out / "README.txt").read_text()


async def test_hold_add_list_release(env: HttpdEnv, capsys: pytest.CaptureFixture[str]) -> None:
    """add prints the id; list shows it; release records who; --all shows released holds."""
    status, out = await run(
        hold_command,
        env,
        ["hold", "add", "--jid", "Alice@Example.test", "--reason", "case 42"],
        capsys,
    )
    assert status == 0 and out.startswith("hold 1: files uploaded by alice@example.test")
    status, out = await run(hold_command, env, ["hold", "add", "--to", BOB], capsys)
    assert out.startswith("hold 2: files sent to bob@example.test")
    status, out = await run(hold_command, env, ["hold", "list"], capsys)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "ON", "JID"]
    assert lines[1].split()[:3] == ["1", "uploader", ALICE] and "case 42" in lines[1]
    assert lines[2].split()[:3] == ["2", "recipient", BOB]
    status, out = await run(
        hold_command, env, ["hold", "release", "1", "--reason", "settled"], capsys
    )
    assert status == 0 and out.startswith("hold 1 released")
    status, out = await run(hold_command, env, ["hold", "list"], capsys)
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["2"]
    status, out = await run(hold_command, env, ["hold", "list", "--all"], capsys)
    assert "settled" in out and len(out.splitlines()) == 3
    status, out = await run(hold_command, env, ["hold", "release", "99"], capsys)
    assert status == 1 and "no hold 99" in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["hold", "add", "-c", "x", "--jid", ALICE, "--to", BOB])


async def test_purge_keeps_held_files_and_verify_accepts_purged(
    env: HttpdEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hold on Bob as recipient keeps his two files; the third is purged and marked."""
    slots = await three_uploads(env)
    old = time.time() - 40 * 86400
    for s in slots:
        os.utime(env.repo.root / s.path.repo_path, (old, old))
    await run(hold_command, env, ["hold", "add", "--to", BOB, "--reason", "subpoena"], capsys)
    status, out = await run(purge_command, env, ["purge", "--older-than", "30d"], capsys)
    assert status == 0, out
    assert "deleted 1 file," in out and "kept 2 files under a legal hold" in out
    present = [(env.repo.root / s.path.repo_path).exists() for s in slots]
    assert present == [True, True, False]
    assert await env.audit.purged([s.path.resource for s in slots]) == {slots[2].path.resource}
    assert len(await env.audit.query(AuditQuery(method="POST"))) == 3  # AFT_LOG rows stay
    status, out = await run(verify_command, env, ["verify"], capsys)
    assert status == 0 and "2 match, 0 problems; 1 purged by retention" in out


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Always a TTY."""
        return True


def test_progress_bar_on_a_terminal_only() -> None:
    """A TTY gets files, bytes and ETA, redrawn at most 5 times a second; a pipe gets nothing."""
    ticks = iter([0.0, 0.1, 0.5])
    tty = Terminal()
    bar = Progress(tty, files=4, nbytes=4_000_000, clock=lambda: next(ticks))
    bar.advance(1_000_000, 1)  # t=0.1: too soon to draw
    assert tty.getvalue() == ""
    bar.advance(1_000_000, 1)  # t=0.5: half done after 0.5 s
    assert "2/4 files" in tty.getvalue() and "2.0 MB/4.0 MB" in tty.getvalue()
    assert "ETA 0:00" in tty.getvalue() and "[############            ]" in tty.getvalue()
    bar.clear()
    assert tty.getvalue().endswith("\r\033[K")
    pipe = io.StringIO()
    quiet = Progress(pipe, files=1, nbytes=1)
    quiet.advance(1, 1)
    quiet.clear()
    assert pipe.getvalue() == ""


async def test_repository_failure_stops_verify_and_export(
    env: HttpdEnv,
    tmp_path: Path,
    config_factory: ConfigFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A read failing half-way raises out of verify (no hang) and export; the CLI says 1."""
    await three_uploads(env)
    broken = ObservedRepository(env.repo.root, read_fail_at=1000)
    await broken.open()
    with pytest.raises(StorageUnavailable):
        await verify(broken, env.audit, node_id="node_1")
    bundle = Bundle(tmp_path / "partial")
    await asyncio.to_thread(bundle.create)
    with pytest.raises(StorageUnavailable):
        await export(broken, env.audit, bundle, await env.rows("POST"))
    bundle.close()
    cfg = unusable_repository(tmp_path, config_factory)
    assert await verify_command(cfg, build_parser().parse_args(["verify", "-c", "x"])) == 1
    args = build_parser().parse_args(["export", "-c", "x", str(tmp_path / "never")])
    assert await export_command(cfg, args) == 1
    assert "repository" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
