"""``die_with_parent``: a server child gets SIGTERM when its parent is killed hard."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from component.servers.childproc import die_with_parent
from tests.fixtures.common import REPO_ROOT, process_gone, reaping, require_binary, wait_gone

# The "parent": starts a long sleep the way the launchers start servers, prints its pid.
PARENT = """
import subprocess, sys, time
from component.servers.childproc import die_with_parent
child = subprocess.Popen([sys.argv[1], "600"], preexec_fn=die_with_parent(),
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_child_ends_when_parent_is_killed() -> None:
    """SIGKILL to the parent: its child (in its own session) is gone within seconds."""
    assert die_with_parent() is not None
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, require_binary("sleep"),
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert parent.stdout is not None
    async with reaping(parent) as orphans:
        async with asyncio.timeout(10):
            child = int(await parent.stdout.readline())
        orphans.append(child)
        assert not process_gone(child)
        parent.kill()
        await parent.wait()
        await wait_gone(child, within=10)
