"""Server child processes that do not outlive their parent (Linux parent-death signal).

``mft sandbox`` and the test fixtures start Prosody, sshd, MariaDB and ejabberd as
children in their own sessions (so a Ctrl-C reaches only the parent). When the parent
is killed hard (SIGKILL, OOM killer, a CI timeout) nobody stops those children: they
keep their ports and temp directories. :func:`die_with_parent` gives each child
``prctl(PR_SET_PDEATHSIG, SIGTERM)``, so the kernel sends it SIGTERM as soon as the
parent dies, and the server shuts down as it would on ``stop()``.

.. note:: The signal survives ``execve`` (so it reaches ``prosody`` through its Lua
   interpreter, ``mariadbd``, and Erlang's ``erl`` -> ``erlexec`` -> ``beam.smp``, which
   each replace the process image), but not ``fork``: grandchildren (sshd's
   per-connection processes, Erlang's ``erl_child_setup``) end on their own when their
   parent goes. And Linux counts the *thread* that started the child as its parent:
   start servers from a thread that lives as long as they should (the event loop's
   thread, or a worker of the default executor, which lives until the loop closes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux; ``None`` elsewhere (the children then may linger)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # option, arg2..arg5
    prctl.restype = ctypes.c_int
    fn: Callable[..., int] = prctl
    return fn


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` (and asyncio's subprocesses) that
    makes the child receive ``sig`` when this process dies.

    Everything is looked up here, in the parent: between ``fork`` and ``exec`` the child
    only calls ``prctl`` and ``getppid``. ``None`` where Linux's ``prctl`` is missing
    (``preexec_fn=None`` is Popen's default).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # If the parent died between fork() and prctl(), no signal will come: act now.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a child server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
