"""Child process for the crash test: open the audit log, spool rows on request, wait to die.

``python -m tests.integration.spool_child URL SPOOL_PATH N``: prints ``open`` once the
log is open; on a line ``go`` on stdin records N rows (the parent has stopped the
database, so they are spooled) and prints ``spooled N``; then blocks until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from component.audit import open_audit_log
from component.config import parse_config
from component.metrics import Metrics
from tests.fixtures.config import make_raw_config
from tests.unit.test_spool import rec


async def main(url: str, spool: str, n: int) -> None:
    """See the module docstring."""
    base = Path(spool).parent
    cfg = parse_config(
        make_raw_config(base, database={"url": url, "spool_path": spool}),
        source=str(base / "mft.toml"),
    )
    audit = open_audit_log(cfg, Metrics())
    await audit.open()
    print("open", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for i in range(n):
        await audit.record(rec(i))
    print(f"spooled {n}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # killed while waiting here


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
