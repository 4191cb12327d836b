"""Peak and after-load RSS of ``mft run`` under N concurrent 10 MiB uploads, then downloads.

The service runs as its own process (``mft run --only httpd``) from this tree and, side by
side in the same run, from a reference commit (``--before``, a git ref checked out into a
temporary worktree). Each cell starts a fresh service: idle RSS, then N concurrent PUTs
followed by N concurrent GETs (all byte-checked), then the peak (VmHWM) and the RSS
``--settle`` seconds after the last byte. Repositories: file:// and sftp:// (a private
sshd on loopback, the test fixture's launcher). Usage::

    .venv/bin/python benchmarks/load_memory.py --before 9246d93 [--counts 1,10,100]
        [--size-mib 10] [--repos file,sftp] [--budget BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.sshd import SshServer, ssh_server  # noqa: E402
from tests.integration.memory_load import (  # noqa: E402
    MIB,
    LoadResult,
    git_tree,
    rss_kib,
    service,
    write_config,
)


async def settle_for(pid: int, seconds: float) -> int:
    """VmRSS after ``seconds`` (a benchmark may wait; a test polls for a condition)."""
    await asyncio.sleep(seconds)
    return rss_kib(pid)[0]


async def cell(
    code: Path, base: Path, repository: dict[str, Any], http: dict[str, Any], n: int, size: int,
    settle: float,
) -> LoadResult:  # fmt: skip
    """One fresh service from ``code``, one load round."""
    from tests.integration.memory_load import run_load

    base.mkdir(parents=True)  # noqa: ASYNC240 (a benchmark's set-up)
    cfg = write_config(base, repository, http)
    if "workers" not in (code / "component" / "config.py").read_text():
        # A tree from before [http] workers refuses the key (it has one process anyway).
        cfg.write_text(re.sub(r"(?m)^workers = .*\n", "", cfg.read_text()))
    async with service(cfg, code) as svc:
        idle, _ = rss_kib(svc.pid)
        up, down = await run_load(svc, n, size)
        _, peak = rss_kib(svc.pid)
        after = await settle_for(svc.pid, settle)
    return LoadResult(idle, peak, after, up, down)


def repo_section(kind: str, base: Path, sshd: SshServer | None) -> dict[str, Any]:
    """The ``[repository]`` section for ``kind`` under ``base``."""
    if kind == "file":
        return {"url": f"file://{base}/repo"}
    assert sshd is not None
    node = sshd.store / base.name
    node.mkdir()
    return sshd.repository(node)


async def main(args: argparse.Namespace) -> None:
    """Every (repository, count, tree) cell; a table on stdout."""
    counts = [int(c) for c in args.counts.split(",")]
    repos = args.repos.split(",")
    size = args.size_mib * MIB
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with git_tree(args.before, work / "before") as before, ssh_server(work / "sshd") as sshd:
            after_http = {"memory_budget": args.budget} if args.budget else {}
            trees = [
                (f"before ({args.before})", before, {}),
                ("after (this tree)", ROOT, after_http),
            ]
            trees = [t for t in trees if t[0].split()[0] in args.trees.split(",")]
            for kind in repos:
                for n in counts:
                    for label, code, http in trees:
                        base = work / f"{kind}-{n}-{len(rows)}"
                        repo = repo_section(kind, base, sshd)
                        res = await cell(code, base, repo, http, n, size, args.settle)
                        rows.append((kind, n, label, res))
                        print(
                            f"{kind:<5} {n:>4} x {args.size_mib} MiB  {label:<28} "
                            f"idle {res.idle / 1024:6.0f}  peak {res.peak / 1024:6.0f}  "
                            f"after {res.after / 1024:6.0f} MiB   "
                            f"up {n * size / res.upload_s / 1e6:5.0f} MB/s  "
                            f"down {n * size / res.download_s / 1e6:5.0f} MB/s",
                            flush=True,
                        )
    print()
    print(
        f"| repo | N x {args.size_mib} MiB | code | idle MiB | peak MiB "
        f"| after {args.settle:g}s MiB | upload MB/s | download MB/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, n, label, res in rows:
        print(
            f"| {kind} | {n} | {label} | {res.idle / 1024:.0f} | {res.peak / 1024:.0f} | "
            f"{res.after / 1024:.0f} | {n * size / res.upload_s / 1e6:.0f} | "
            f"{n * size / res.download_s / 1e6:.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", default="9246d93", help="git ref of the reference code")
    parser.add_argument("--counts", default="1,10,100")
    parser.add_argument("--size-mib", type=int, default=10)
    parser.add_argument("--repos", default="file,sftp")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--trees", default="before,after", help="which code to run")
    parser.add_argument("--budget", type=int, default=0, help="[http] memory_budget (after)")
    asyncio.run(main(parser.parse_args()))
