"""The MariaDB fixture works where the machine has no /etc/hosts (minimal images, chroots)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.common import IN_CI, require_binary

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# Run inside the namespace: install, start, connect over TCP as the test user, stop.
CHILD = """
import contextlib, sys
from pathlib import Path
import pymysql
from tests.fixtures.mariadb import mariadb_running
with mariadb_running(Path(sys.argv[1]), sys.argv[2], sys.argv[3]) as db:
    name = db.create_database()
    with contextlib.closing(pymysql.connect(host="127.0.0.1", port=db.port, user=db.user,
                                            password=db.password, database=name)) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 40 + 2")
            print("answer", cur.fetchone()[0])
"""


def test_mariadb_fixture_without_etc_hosts(tmp_path: Path) -> None:
    """With /etc/hosts empty (bind-mounted /dev/null), the fixture installs, starts, serves."""
    mariadbd = require_binary("mariadbd", "/usr/sbin/mariadbd")
    install_db = require_binary("mariadb-install-db")
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        if IN_CI:
            pytest.fail("needs root and unshare to hide /etc/hosts")
        pytest.skip("needs root and unshare to hide /etc/hosts")
    script = 'mount --bind /dev/null /etc/hosts && test ! -s /etc/hosts && exec "$@"'
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, "-c", CHILD, str(tmp_path / "db"), mariadbd, install_db],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "answer 42"), done.stderr[-3000:]
