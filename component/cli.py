"""The ``mft`` command line: ``run | sandbox | check | keygen | keyscan | speedtest | purge | log
| verify | export | hold``.

This module parses the arguments; it does not know where a command is implemented.
Each command is an entry point of the group :data:`REGISTRY` declared in ``setup.cfg``
(``run = httpd.ops.runner:run_command``, ...), the one sanctioned way from ``component``
to ``httpd``: ``component`` names no ``httpd`` module, neither in an import nor in a
string, and only the command that runs is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any

from component import __version__
from component.audit import METHODS
from component.config import Config, load_config
from component.errors import ConfigError

log = logging.getLogger(__name__)

# The entry-point group that maps each command to ``async def f(cfg | None, args) -> int``.
REGISTRY = "xmpp_mft.commands"
# Commands that work without a configuration file.
NO_CONFIG = {"sandbox", "keyscan"}

CommandFn = Callable[[Config | None, argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="mft", description="Managed file transfer for XMPP")
    parser.add_argument("--version", action="version", version=f"xmpp-mft {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument(
            "-c",
            "--config",
            default=os.environ.get("MFT_CONFIG"),
            required=required and not os.environ.get("MFT_CONFIG"),
            help="the mft.toml file (default: $MFT_CONFIG)",
        )

    p = sub.add_parser("run", help="run the component and the HTTP server")
    with_config(p)
    p.add_argument("--only", choices=("component", "httpd"), help="run one half (scale-out)")

    p = sub.add_parser("sandbox", help="a throwaway local Prosody + the service, for trying it")
    p.add_argument("--dir", default="mft-sandbox", help="where the sandbox keeps its files")
    p.add_argument("--domain", default="localhost", help="XMPP domain of the sandbox")
    p.add_argument("--c2s-port", type=int, default=5222)
    p.add_argument("--http-port", type=int, default=5443)
    p.add_argument(
        "--https",
        action="store_true",
        help="serve uploads over HTTPS with a local CA made in --dir (for Gajim, Dino)",
    )

    p = sub.add_parser("check", help="check database, repository, XMPP router and HTTP URL")
    with_config(p)

    p = sub.add_parser("keygen", help="make the node's SSH key pair, print the public line")
    with_config(p)
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.add_argument("--show", action="store_true", help="print the existing public line")

    p = sub.add_parser("keyscan", help="print a file server's host key line and fingerprint")
    p.add_argument("host")
    p.add_argument("-p", "--port", type=int, default=22)
    p.add_argument("-t", "--type", default="", help="key type, e.g. rsa or ed25519")

    p = sub.add_parser("speedtest", help="repository write/read throughput in MB/s")
    with_config(p)
    p.add_argument("--size", default="256M", help="test file size (K, M, G suffixes)")

    p = sub.add_parser("purge", help="delete files older than a given age (AFT_LOG rows stay)")
    with_config(p)
    p.add_argument("--older-than", required=True, help="age such as 30d, 12h")
    p.add_argument("--dry-run", action="store_true")

    p = sub.add_parser("log", help="query AFT_LOG")
    with_config(p)
    p.add_argument("--jid")
    p.add_argument("--to")
    p.add_argument("--since", help="YYYY-MM-DD or ISO date-time, UTC")
    p.add_argument("--until", help="YYYY-MM-DD or ISO date-time, UTC (exclusive)")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--chat-type", choices=("im", "groupchat", "persistent"))
    p.add_argument("--limit", type=int)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    p = sub.add_parser("verify", help="re-hash every stored file and compare with AFT_LOG")
    with_config(p)
    p.add_argument("--since", help="uploads from YYYY-MM-DD or ISO date-time, UTC")
    p.add_argument("--until", help="uploads before YYYY-MM-DD or ISO date-time, UTC")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = sub.add_parser("export", help="an eDiscovery bundle: files, AFT_LOG rows, SHA256SUMS")
    with_config(p)
    p.add_argument("--jid", help="uploads by this JID")
    p.add_argument("--to", help="uploads sent to this user or room")
    p.add_argument("--since", help="uploads from YYYY-MM-DD or ISO date-time, UTC")
    p.add_argument("--until", help="uploads before YYYY-MM-DD or ISO date-time, UTC")
    p.add_argument("out", metavar="OUT", help="new directory, or a file ending .zip")

    p = sub.add_parser("hold", help="legal holds: files purge must keep")
    hold = p.add_subparsers(dest="hold_command", required=True, metavar="ACTION")
    h = hold.add_parser("add", help="hold the files of an uploader or a recipient")
    with_config(h)
    who = h.add_mutually_exclusive_group(required=True)
    who.add_argument("--jid", help="files this JID uploaded")
    who.add_argument("--to", help="files sent to this user or room")
    h.add_argument("--reason", default="", help="case number, court order, ...")
    h = hold.add_parser("list", help="active holds")
    with_config(h)
    h.add_argument("--all", action="store_true", help="released holds too")
    h = hold.add_parser("release", help="release a hold")
    with_config(h)
    h.add_argument("hold_id", metavar="ID", type=int)
    h.add_argument("--reason", default="", help="why it is released")
    return parser


def registered_commands() -> dict[str, str]:
    """``command -> "module:function"`` as the installed distribution declares them."""
    return {ep.name: ep.value for ep in entry_points(group=REGISTRY)}


def resolve(command: str) -> CommandFn:
    """The coroutine function implementing ``command``.

    :raises ConfigError: the command is not registered (a stale install: reinstall).
    """
    found = entry_points(group=REGISTRY, name=command)
    if not found:
        raise ConfigError(f"command {command!r} is not registered; reinstall xmpp-mft")
    fn: CommandFn = next(iter(found)).load()
    return fn


# Libraries that log routine events at INFO (asyncssh: every SSH connection and SFTP
# session, several lines per transfer under `mft run`): WARNING unless -vv.
CHATTY_LIBRARIES = ("asyncssh",)


def quiet_libraries(verbose: int) -> None:
    """Raise :data:`CHATTY_LIBRARIES` to WARNING, unless ``-vv`` asks for everything."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose > 1 else logging.WARNING)


class _SecondsFormatter(logging.Formatter):
    """:class:`logging.Formatter` that renders the date and time once per second, not
    once per record (the same text: ``2026-01-02 03:04:05,678``)."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``asctime``, from the cached second unless a ``datefmt`` is given."""
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second, self._stamp = second, stamp
        return f"{self._stamp},{int(record.msecs):03d}"  # default_msec_format


@contextlib.contextmanager
def stderr_logging(level: int, fmt: str) -> Iterator[None]:
    """Log to stderr like :func:`logging.basicConfig`, for less CPU per record.

    Each record is still formatted and written at once, in the caller's thread (so it
    is in order with anything else written to stderr, and out before a crash), but the
    caller's file and line, thread and process name are not looked up (no format uses
    them: the logging HOWTO's "Optimization") and the date is rendered once a second.
    Handing records to a QueueListener thread was measured too (benchmarks/log_cost.py):
    less time on the event loop, more CPU in all. As basicConfig, nothing changes when
    the root logger has handlers already; the stream is flushed when the block ends.
    """
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    logging.logMultiprocessing = False
    logging.logThreads = False
    logging._srcfile = None  # no sys._getframe() per record
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SecondsFormatter(fmt))
    root.setLevel(level)
    root.addHandler(handler)
    try:
        yield
    finally:
        handler.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mft`` console script."""
    args = build_parser().parse_args(argv)
    level = (
        logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose or args.command in ("run", "sandbox")
        else logging.WARNING
    )
    with stderr_logging(level, "%(asctime)s %(levelname)s %(name)s: %(message)s"):
        quiet_libraries(args.verbose)
        return _configured(args)


def _configured(args: argparse.Namespace) -> int:
    """Load the configuration and run the command."""
    cfg: Config | None = None
    try:
        if getattr(args, "config", None):
            cfg = load_config(args.config)
        elif args.command not in NO_CONFIG:
            raise ConfigError("no configuration file: give -c mft.toml or set $MFT_CONFIG")
    except ConfigError as exc:
        print(f"mft: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        command = resolve(args.command)
    except ConfigError as exc:
        print(f"mft: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(command(cfg, args))
    except ConfigError as exc:
        # A key only a back-end can judge (e.g. a database URL option), found as it opens.
        print(f"mft: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
