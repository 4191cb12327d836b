"""The servers benchmarks/peers.py compares: ejabberd with mod_http_upload, Prosody with
mod_http_file_share, xmpp-mft (``mft run``) attached to each, and one sshd.

Also what it reads about them from /proc: CPU seconds of a process tree and peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from component.servers.childproc import die_with_parent  # noqa: E402
from component.servers.prosody import ProsodyInstance  # noqa: E402
from tests.fixtures.common import ServerProcess, free_port, wait_for_port  # noqa: E402

EJABBERD_DOMAIN = "bench.test"
PROSODY_DOMAIN = "localhost"
MFT_JID = "upload.{domain}"
SHARE_JID = "share.{domain}"
TICKS = os.sysconf("SC_CLK_TCK")
GIB = 1024**3


# ---------------------------------------------------------------- /proc readings


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children, found, todo = _children(), [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid``'s tree, plus what its reaped children used (cutime+cstime)."""
    total = 0
    for i, p in enumerate(tree(pid)):
        with contextlib.suppress(OSError, IndexError):
            f = _stat_fields(p)
            # fields after the comm: state=0, ... utime=11, stime=12, cutime=13, cstime=14
            total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if i == 0 else 0)
    return total / TICKS


def peak_rss_mib(pid: int) -> float:
    """Sum of VmHWM over ``pid``'s live tree (an upper bound for a multi-process server)."""
    kib = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    kib += int(line.split()[1])
    return kib / 1024


# ---------------------------------------------------------------- ejabberd


@dataclass
class Ejabberd:
    """ejabberd 23.01 with mod_http_upload on ``share.bench.test``, anonymous c2s logins,
    no shaper anywhere, and a component listener for xmpp-mft."""

    base: Path
    c2s_port: int = 0
    http_port: int = 0
    component_port: int = 0
    secret: str = ""
    server: ServerProcess | None = None
    components: tuple[str, ...] = (MFT_JID.format(domain=EJABBERD_DOMAIN),)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def docroot(self) -> Path:
        """Where mod_http_upload keeps its files."""
        return self.base / "docroot"

    @property
    def pid(self) -> int:
        """beam.smp's pid (erl execs it)."""
        assert self.server is not None and self.server.proc is not None
        return self.server.proc.pid

    def config(self) -> str:
        """ejabberd.yml."""
        d = EJABBERD_DOMAIN
        # One listener per component: ejabberd routes every host of a listener's
        # ``hosts`` to each component connected there. ``shaper: none`` is ejabberd
        # 23.01's default for ejabberd_service (its old name ``shaper_rule`` only logs a
        # deprecation warning); the other per-stanza options stay at their defaults,
        # which cost next to nothing: ``access: all`` short-cuts the ACL match and
        # ``check_from`` is one map lookup (and keeps the component from forging
        # senders). See component/servers/deploykit.py for the deploy kit's listener.
        services = "".join(
            f"""  -
    port: {self.ports[jid]}
    ip: "127.0.0.1"
    module: ejabberd_service
    shaper: none
    hosts:
      "{jid}":
        password: "{self.secret}"
"""
            for jid in self.components
        )
        return f"""\
hosts: ["{d}"]
loglevel: warning
auth_method: [anonymous]
anonymous_protocol: sasl_anon
allow_multiple_connections: true
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
shaper: {{}}
shaper_rules:
  c2s_shaper: none
  s2s_shaper: none
  max_user_sessions: 10000
listen:
  -
    port: {self.c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    shaper: none
    max_stanza_size: 1048576
  -
    port: {self.http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /upload: mod_http_upload
{services}modules:
  mod_disco: {{}}
  mod_http_upload:
    hosts: ["{SHARE_JID.format(domain=d)}"]
    docroot: "{self.docroot}"
    put_url: "http://127.0.0.1:{self.http_port}/upload"
    max_size: infinity
    thumbnail: false
    access: local
"""

    def start(self) -> Ejabberd:
        """Write the config and start ejabberd; return once the c2s port listens."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.c2s_port, self.http_port = free_port(), free_port()
        self.secret = secrets.token_hex(8)
        self.ports = {jid: free_port() for jid in self.components}
        self.component_port = self.ports[self.components[0]]
        self.docroot.mkdir(exist_ok=True)
        (self.base / "spool").mkdir(exist_ok=True)
        (self.base / "ejabberd.yml").write_text(self.config())
        libs = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin"))
        if not libs:
            raise RuntimeError("ejabberd is not installed (apt-get install ejabberd)")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "EJABBERD_CONFIG_PATH": str(self.base / "ejabberd.yml"),
            "EJABBERD_LOG_PATH": str(self.base / "ejabberd.log"),
            "ERL_LIBS": str(Path(libs[0]).parent.parent),
            "ERL_CRASH_DUMP": str(self.base / "erl_crash.dump"),
        }
        argv = ["erl", "-noinput", "-noshell", "-mnesia", "dir", f'"{self.base / "spool"}"']
        self.server = ServerProcess(
            "ejabberd", [*argv, "-s", "ejabberd"], self.base / "stdout.log", self.base, env
        ).start()
        try:
            for port in (self.c2s_port, self.http_port, *self.ports.values()):
                wait_for_port(port, self.server.proc, 60)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"ejabberd did not start: {exc}\n{self.server.log_tail()}") from exc
        return self

    def stop(self) -> None:
        """Stop ejabberd."""
        if self.server is not None:
            self.server.stop()


# ---------------------------------------------------------------- Prosody


class BenchProsody(ProsodyInstance):
    """A ProsodyInstance with global options too (``extra_config`` lands in the last
    Component's scope)."""

    global_config: tuple[str, ...] = ()

    def render_config(self) -> str:
        """The config with ``global_config`` before the first VirtualHost."""
        text = super().render_config()
        return text.replace(
            "\nVirtualHost", "\n" + "\n".join(self.global_config) + "\nVirtualHost", 1
        )


def prosody_instance(base: Path, more_components: tuple[str, ...] = ()) -> BenchProsody:
    """Prosody with xmpp-mft's component entry and mod_http_file_share on ``share.*``."""
    prosody = BenchProsody(
        base,
        domain=PROSODY_DOMAIN,
        component_jid=MFT_JID.format(domain=PROSODY_DOMAIN),
        users={"bench": "bench-pw"},
        extra_components={jid: secrets.token_hex(8) for jid in more_components},
    )
    share = SHARE_JID.format(domain=PROSODY_DOMAIN)
    prosody.extra_config = [
        f'Component "{share}" "http_file_share"',
        "    http_file_share_size_limit = 4*1024*1024*1024",
        "    http_file_share_daily_quota = 1024*1024*1024*1024",
        "    http_file_share_global_quota = 1024*1024*1024*1024*1024",
        f'    http_external_url = "http://127.0.0.1:{prosody.http_port}/"',
    ]
    prosody.global_config = (
        f'http_default_host = "{share}"',
        # Each slot is an archive item; 0.12's internal storage refuses (undefined-
        # condition) after 10,000 per store by default, which one run passes.
        "storage_archive_item_limit = 10000000",
        # http_max_content_size stays at its default (10 MiB): mod_http_file_share
        # streams a body larger than that to disk instead of buffering it.
    )
    return prosody


# ---------------------------------------------------------------- xmpp-mft


@dataclass
class Mft:
    """One ``mft run`` process (``python -m component``) from this checkout."""

    name: str
    base: Path
    xmpp: str  # the [xmpp] section body ("" for --only httpd)
    repository: str  # the [repository] section body
    http_port: int = 0
    process: asyncio.subprocess.Process | None = None
    secret: str = ""
    root: Path = ROOT  # the checkout it runs from (another one: a baseline)

    @property
    def public_url(self) -> str:
        """Base of the URLs it hands out."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def config_path(self) -> Path:
        """Its mft.toml."""
        return self.base / "mft.toml"

    @property
    def pid(self) -> int:
        """The main process's pid."""
        assert self.process is not None
        return self.process.pid

    def write_config(self, workers: int | None) -> None:
        """mft.toml: loopback HTTP, SQLite AFT_LOG, no size limit below 4 GiB."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        self.secret = self.secret or secrets.token_hex(16)
        xmpp = (
            f"[xmpp]\n{self.xmpp}"
            if self.xmpp
            else '[xmpp]\ncomponent_jid = "upload.x"\nsecret = "x"\n'
        )
        extra = f"workers = {workers}\n" if workers is not None else ""
        self.config_path.write_text(
            f"""\
[node]
id = "node_1"
{xmpp}
[http]
bind = "127.0.0.1"
port = {self.http_port}
public_url = "{self.public_url}"
secret = "{self.secret}"
{extra}
[upload]
max_file_size = 0
slot_lifetime = 3600
[repository]
{self.repository}
[database]
url = "sqlite:///{self.base}/aft.sqlite3"
spool_path = "{self.base}/spool"
"""
        )

    async def start(self, only: str | None, workers: int | None, profile: list[str]) -> None:
        """Start ``mft run`` and wait for its HTTP port."""
        self.write_config(workers)
        argv = [
            sys.executable,
            *(a.format(name=self.name) for a in profile),
            "-m",
            "component",
            "run",
            "-c",
            str(self.config_path),
        ]
        if only:
            argv += ["--only", only]
        # A file, not a pipe: an undrained pipe fills up and stalls the service.
        with (self.base / "mft.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PYTHONPATH": str(self.root)}, preexec_fn=die_with_parent(),
            )  # fmt: skip
        async with asyncio.timeout(60):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
                try:
                    _r, w = await asyncio.open_connection("127.0.0.1", self.http_port)
                    w.close()
                    return
                except OSError:
                    await asyncio.sleep(0.1)  # polling another process's start-up

    def log_tail(self, lines: int = 40) -> str:
        """The end of its log."""
        text = (self.base / "mft.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def running_mft(
    mft: Mft, only: str | None, workers: int | None, profile: list[str]
) -> AsyncIterator[Mft]:
    """``mft`` started, always stopped afterwards."""
    try:
        await mft.start(only, workers, profile)
        yield mft
    finally:
        await mft.stop()
