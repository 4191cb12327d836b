"""AFT_LOG throughput: rows/s into PostgreSQL and MariaDB from concurrent writers, side by
side, whether logging slows small-file uploads (10 KiB PUT + GET through the HTTP app),
and what a download's lookup of its upload's rows costs (POST row, then first SHARE row, or
both in one statement).

Starts its own ``mariadbd`` and PostgreSQL 15 ``postgres`` in temp dirs (the test fixtures'
launchers; both with their default durability: a COMMIT is flushed to disk). References
measured in the same run: the SQLite log for rows/s, and a log that stores nothing for
uploads/s.

    python benchmarks/auditlog.py [--rows 3000] [--writers 1,8,32] [--uploads 600]
                               [--lookups 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from component.audit import AuditLog, AuditRecord, open_audit_log, upload_and_share_finder_of
from component.audit.spooled import SpooledAuditLog
from component.config import Config, parse_config
from component.metrics import Metrics
from tests.fakes import FakeAudit
from tests.fixtures.config import make_raw_config
from tests.fixtures.mariadb import MariaDB, find_binaries, mariadb_running
from tests.fixtures.postgresql import PostgreSQL, find_bin_dir, postgresql_running

Server = MariaDB | PostgreSQL

ROW = AuditRecord(
    jid="alice@example.test/phone",
    to_jid="bob@example.test",
    method="POST",
    filename="x",
    real_filename="holiday photo.jpg",
    file_type="jpg",
    chat_type="im",
    file_server="files.example.test",
    file_size=10240,
    node_id="node_1",
    client_ip="192.0.2.10",
)


def config(base: Path, url: str, **sections: dict[str, Any]) -> Config:
    """A config under ``base`` whose AFT_LOG is ``url``."""
    base.mkdir(parents=True, exist_ok=True)
    raw = make_raw_config(base, database={"url": url, "spool_path": str(base / "spool")})
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw, source=str(base / "mft.toml"))


async def run_writers(n_writers: int, total: int, job: Callable[[int], Awaitable[None]]) -> float:
    """Run ``total`` jobs over ``n_writers`` concurrent tasks; returns jobs per second."""
    counter = iter(range(total))

    async def writer() -> None:
        for i in counter:
            await job(i)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n_writers):
            tg.create_task(writer())
    return total / (time.perf_counter() - t0)


async def rows_per_second(cfg: Config, writers: int, rows: int) -> float:
    """record() throughput of the configured log (mysql, postgresql: with the spool wrapper)."""
    audit = open_audit_log(cfg, Metrics())
    await audit.open()
    try:
        return await run_writers(
            writers, rows, lambda i: audit.record(replace(ROW, filename=f"w{writers}-{i}"))
        )
    finally:
        await audit.close()


async def spool_drain_rate(cfg: Config, db: Server, rows: int) -> tuple[float, float]:
    """(rows/s spooled while the database is down, rows/s delivered once it is back)."""
    audit = open_audit_log(cfg, Metrics())
    assert isinstance(audit, SpooledAuditLog)
    await audit.open()
    try:
        await asyncio.to_thread(db.stop)
        spooled = await run_writers(
            8, rows, lambda i: audit.record(replace(ROW, filename=f"spool-{i}"))
        )
        await asyncio.to_thread(db.start)
        t0 = time.perf_counter()
        async with asyncio.timeout(300):
            await audit.flush()
        return spooled, rows / (time.perf_counter() - t0)
    finally:
        await audit.close()


async def lookup_microseconds(cfg: Config, writer_cfg: Config, lookups: int) -> tuple[float, float]:
    """µs per download lookup of an upload without recipient that another process (of
    ``writer_cfg``: its own spool) wrote: (``find_upload`` then ``find_first_share``,
    ``find_upload_and_share``), one at a time."""
    writer, reader = open_audit_log(writer_cfg, Metrics()), open_audit_log(cfg, Metrics())
    await writer.open()
    await reader.open()
    try:
        anonymous = replace(ROW, filename="looked-up", to_jid="")
        await writer.record(anonymous)
        await writer.record(replace(anonymous, method="SHARE", to_jid="room@conference.test"))
        finder = upload_and_share_finder_of(reader)
        assert finder is not None

        async def two_steps() -> None:
            up = await reader.find_upload("looked-up")
            assert up is not None and await reader.find_first_share("looked-up") is not None

        async def one_statement() -> None:
            up, share = await finder.find_upload_and_share("looked-up")
            assert up is not None and share is not None

        timings = []
        for lookup in (two_steps, one_statement):
            t0 = time.perf_counter()
            for _ in range(lookups):
                await lookup()
            timings.append((time.perf_counter() - t0) / lookups * 1e6)
        return timings[0], timings[1]
    finally:
        await reader.close()
        await writer.close()


def fresh_url(name: str, where: Path, maria_db: MariaDB, pg_db: PostgreSQL) -> str:
    """The URL of a new, empty AFT_LOG of back-end ``name`` (SQLite: a file in ``where``)."""
    if name == "sqlite":
        return f"sqlite:///{where}/aft.sqlite3"
    db: Server = maria_db if name == "mariadb" else pg_db
    return db.url(db.create_database())


def table(title: str, header: Sequence[str], lines: Sequence[Sequence[object]]) -> None:
    """Print an aligned table."""
    cells = [list(map(str, header))] + [[str(c) for c in line] for line in lines]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if n and i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


async def main(args: argparse.Namespace) -> int:
    """Run the benchmarks and print the tables."""
    found = find_binaries()
    pg_bin = find_bin_dir()
    if found is None or pg_bin is None:
        print("mariadbd / mariadb-install-db or PostgreSQL 15 not installed", file=sys.stderr)
        return 1
    writers = [int(w) for w in args.writers.split(",")]
    with (
        tempfile.TemporaryDirectory(prefix="mft-bench-") as tmp,
        mariadb_running(Path(tmp) / "mariadb", *found) as maria_db,
        postgresql_running(pg_bin) as pg_db,
    ):
        base = Path(tmp)
        # Rounds interleave the back-ends, and each cell is the median of its rounds: a
        # machine shared with other work slows whichever run it hits, not one column.
        names = ("sqlite", "mariadb", "postgresql")
        samples: dict[tuple[str, int], list[float]] = {}
        cell = itertools.count()
        for _ in range(args.rounds):
            for n in writers:
                for name in names:
                    where = base / f"{name}-{next(cell)}"
                    url = fresh_url(name, where, maria_db, pg_db)
                    rate = await rows_per_second(config(where, url), n, args.rows)
                    samples.setdefault((name, n), []).append(rate)
        lines = []
        for n in writers:
            lite, maria, pg = (statistics.median(samples[(name, n)]) for name in names)
            lines.append(
                (n, f"{lite:,.0f}", f"{maria:,.0f}", f"{pg:,.0f}", f"{maria / lite:.2f}",
                 f"{pg / lite:.2f}")
            )  # fmt: skip
        table(
            f"AFT_LOG record(): rows/s, {args.rows} rows per cell, median of {args.rounds}"
            " interleaved rounds (reference: SQLite, same run)",
            ("writers", "sqlite rows/s", "mariadb rows/s", "postgresql rows/s",
             "mariadb/sqlite", "postgresql/sqlite"),
            lines,
        )  # fmt: skip
        outage = []
        for name, db in (("mariadb", maria_db), ("postgresql", pg_db)):
            url = db.url(db.create_database())
            spooled, drained = await spool_drain_rate(
                config(base / f"spool-{name}", url), db, args.rows
            )
            outage.append((name, args.rows, f"{spooled:,.0f}", f"{drained:,.0f}"))
        table(
            "Database outage: durable spool (fsync per row) and delivery once it is back",
            ("database", "rows", "spooled rows/s", "delivered rows/s"),
            outage,
        )
        if args.lookups:
            per_log: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for name in names:
                    where = base / f"lookup-{next(cell)}"
                    url = fresh_url(name, where, maria_db, pg_db)
                    timed = await lookup_microseconds(
                        config(where, url), config(where / "writer", url), args.lookups
                    )
                    per_log.setdefault(name, []).append(timed)
            lookups = []
            for name in names:
                two = statistics.median(t for t, _ in per_log[name])
                one = statistics.median(o for _, o in per_log[name])
                lookups.append((name, f"{two:,.0f}", f"{one:,.0f}", f"{two / one:.2f}x"))
            table(
                f"A download's lookup of its upload's rows (POST without recipient + first"
                f" SHARE), µs each, {args.lookups} one at a time, median of {args.rounds} rounds",
                ("audit log", "two lookups µs", "one statement µs", "speed-up"),
                lookups,
            )
        if args.uploads:
            await upload_benchmark(base, {"mariadb": maria_db, "postgresql": pg_db}, args)
    return 0


async def upload_benchmark(
    base: Path, servers: dict[str, Server], args: argparse.Namespace
) -> None:
    """10 KiB uploads + downloads per second through the HTTP app with each audit log."""
    try:
        from benchmarks.auditlog_http import uploads_per_second
    except ImportError as exc:  # httpd.app not merged yet
        print(f"\n(upload benchmark skipped: {exc})")
        return
    logs: list[tuple[str, Callable[[Config], AuditLog]]] = [
        ("none (reference)", lambda cfg: FakeAudit()),  # stores nothing
        ("sqlite", lambda cfg: open_audit_log(cfg, Metrics())),
        ("mariadb", lambda cfg: open_audit_log(cfg, Metrics())),
        ("postgresql", lambda cfg: open_audit_log(cfg, Metrics())),
    ]
    rates: dict[str, list[tuple[float, float]]] = {}
    cell = itertools.count()
    for _ in range(args.rounds):
        for name, factory in logs:
            db = servers.get(name)
            where = base / f"http-{next(cell)}"
            url = (
                db.url(db.create_database()) if db is not None else f"sqlite:///{where}/aft.sqlite3"
            )
            cfg = config(where, url)
            rates.setdefault(name, []).append(
                await uploads_per_second(cfg, factory(cfg), args.uploads, args.clients)
            )
    lines = []
    for name, _factory in logs:
        up = statistics.median(u for u, _ in rates[name])
        down = statistics.median(d for _, d in rates[name])
        lines.append((name, f"{up:,.0f}", f"{down:,.0f}"))
    table(
        f"10 KiB files through the HTTP app, {args.clients} clients, {args.uploads} files,"
        f" median of {args.rounds} interleaved rounds",
        ("audit log", "uploads/s", "downloads/s"),
        lines,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000, help="rows per measurement")
    parser.add_argument("--writers", default="1,8,32", help="concurrent writers to try")
    parser.add_argument("--uploads", type=int, default=600, help="files per upload run (0: skip)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--lookups", type=int, default=2000, help="download lookups (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    sys.exit(asyncio.run(main(parser.parse_args())))
