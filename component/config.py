"""The one TOML configuration file, parsed once into frozen dataclasses.

Keys and sections are the contract in DESIGN.md; ``deploy/mft.example.toml`` documents
every key. Unknown keys, missing keys and wrong types raise :class:`ConfigError` naming
the section and key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from component.dburl import (
    PostgresTarget,
    check_database_url,
    check_port,
    parse_postgres_url,
    safe_url,
)
from component.errors import ConfigError
from component.hostkey import check_host_key
from component.layout import NODE_RE
from component.scanconfig import ScanConfig as ScanConfig  # re-exported: one config API
from component.sections import build_section

MAX_FILE_SIZE = 4 * 1024**3  # seed: "the default file size setting (0) allows files up to 4GB"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """``[node]``: which node this process is."""

    id: str = "node_1"

    def __post_init__(self) -> None:
        if not NODE_RE.match(self.id):
            raise ConfigError(
                f"[node] id {self.id!r}: use 1-128 letters, digits, dash or underscore"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class XmppConfig:
    """``[xmpp]``: the XEP-0114 connection to the XMPP server's component port."""

    component_jid: str
    secret: str = field(repr=False)
    # XEP-0114 is unencrypted: keep the component port on loopback or a private link.
    host: str = "127.0.0.1"
    port: int = 5347
    muc_domains: tuple[str, ...] = ()
    reconnect_max_delay: float = 60.0
    # Chat-type classification: how long to wait for disco answers, how long to cache them.
    disco_timeout: float = 5.0
    disco_cache_ttl: float = 300.0
    # Servers whose share reports (mod_mft_share) are believed; empty: the server domain.
    share_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.reconnect_max_delay <= 0:
            raise ConfigError("[xmpp] reconnect_max_delay: more than 0 seconds")
        if not 0 < self.disco_timeout <= 60:
            raise ConfigError("[xmpp] disco_timeout: more than 0, at most 60 seconds")
        if not 0 <= self.disco_cache_ttl <= 86400:
            raise ConfigError("[xmpp] disco_cache_ttl: between 0 and 86400 seconds")

    @property
    def share_host_set(self) -> tuple[str, ...]:
        """Hosts whose ``<shared>`` reports are accepted: configured, else the server domain."""
        return self.share_hosts or (self.server_domain,)

    @property
    def server_domain(self) -> str:
        """The XMPP server's domain: the component JID without its first label."""
        _, _, parent = self.component_jid.partition(".")
        return parent or self.component_jid


DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024
MAX_WORKERS = 64
MIN_MEMORY_BUDGET = 1024 * 1024  # one SFTP block each way, with room
MAX_MEMORY_BUDGET = 64 * 1024 * 1024 * 1024


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a systemd ``CPUAffinity=``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """``[http]``: the upload/download HTTP server."""

    public_url: str
    secret: str = field(repr=False)
    bind: str = "0.0.0.0"
    port: int = 5443
    tls_cert: str = ""
    tls_key: str = ""
    shutdown_grace: float = 30.0
    # Seconds an upload body may stall (no bytes arriving) before it is abandoned (408).
    body_timeout: float = 60.0
    # Reverse proxies (IPs or CIDR networks) whose X-Forwarded-For / Forwarded headers
    # name the client. Empty: those headers are never believed (anyone can send them).
    trusted_proxies: tuple[str, ...] = ()
    # Bytes all transfers of the process together may hold in buffers (httpd.budget);
    # past it transfers wait and their clients are slowed by TCP back-pressure.
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    # HTTP server processes sharing the port (SO_REUSEPORT); 0: one per CPU this process
    # may run on. 1 serves HTTP in the component's own process.
    workers: int = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"[http] public_url {self.public_url!r}: must be an http(s) URL")
        if len(self.secret) < 16:
            raise ConfigError("[http] secret: use at least 16 characters")
        if self.shutdown_grace < 0 or self.body_timeout <= 0:
            raise ConfigError("[http] shutdown_grace >= 0 and body_timeout > 0 seconds")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("[http] tls_cert and tls_key: give both or neither")
        if not MIN_MEMORY_BUDGET <= self.memory_budget <= MAX_MEMORY_BUDGET:
            raise ConfigError(
                f"[http] memory_budget: {MIN_MEMORY_BUDGET} (1 MiB) up to {MAX_MEMORY_BUDGET} bytes"
            )
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"[http] workers: 0 (one per CPU) up to {MAX_WORKERS}")
        if self.workers == 0:
            object.__setattr__(self, "workers", min(MAX_WORKERS, usable_cpus()))
        object.__setattr__(self, "trusted_proxies", tuple(map(str, self.trusted_networks)))
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    @property
    def trusted_networks(self) -> tuple[IPNetwork, ...]:
        """``trusted_proxies`` as networks (a bare address is a /32 or /128).

        :raises ConfigError: an entry is not an IP address or network.
        """
        networks = []
        for entry in self.trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"[http] trusted_proxies: {entry!r} is not an IP address or network"
                    ' (e.g. "127.0.0.1", "10.0.0.0/8", "::1")'
                ) from None
        return tuple(networks)


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadConfig:
    """``[upload]``: slot policy."""

    mode: Literal["managed", "disabled"] = "managed"
    max_file_size: int = 0
    slot_lifetime: int = 300
    # Empty means "the XMPP server's own domain" (see Config.allowed_domains).
    allowed_domains: tuple[str, ...] = ()
    daily_bytes: int = 0
    files_per_hour: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("managed", "disabled"):
            raise ConfigError(f"[upload] mode {self.mode!r}: use 'managed' or 'disabled'")
        if not 0 <= self.max_file_size <= MAX_FILE_SIZE:
            raise ConfigError(f"[upload] max_file_size: 0 (= 4 GiB) up to {MAX_FILE_SIZE}")
        if self.max_file_size == 0:
            object.__setattr__(self, "max_file_size", MAX_FILE_SIZE)
        if not 10 <= self.slot_lifetime <= 3600:
            raise ConfigError("[upload] slot_lifetime: between 10 and 3600 seconds")
        if self.daily_bytes < 0 or self.files_per_hour < 0:
            raise ConfigError("[upload] daily_bytes and files_per_hour: 0 (no limit) or more")


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadConfig:
    """``[download]``: downloader identity tickets."""

    require_identity: bool = False
    ticket_lifetime: int = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryConfig:
    """``[repository]``: where files are stored (``sftp://`` or ``file://``)."""

    url: str = "file:///var/lib/mft/files"
    host_key: str = ""
    client_key: str = "/etc/mft/node_key"
    files_per_directory: int = 1000
    connect_timeout: float = 15.0
    io_timeout: float = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("sftp", "file"):
            raise ConfigError(f"[repository] url {self.url!r}: use sftp:// or file://")
        if parts.scheme == "sftp":
            if not (parts.hostname and parts.username and parts.path):
                raise ConfigError(f"[repository] url {self.url!r}: use sftp://user@host:port/path")
            check_port("[repository] url", safe_url(self.url))
            if self.host_key:  # empty: `mft keygen` may run before the key is pinned
                check_host_key(self.host_key, self.host, self.port)
        if self.files_per_directory < 1:
            raise ConfigError("[repository] files_per_directory: at least 1")

    @property
    def scheme(self) -> str:
        """``sftp`` or ``file``."""
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        """The file server's host (``localhost`` for ``file://``): AFT_LOG's FILE_SERVER."""
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        """The SSH port (22 unless the URL says otherwise)."""
        return urlsplit(self.url).port or 22

    @property
    def username(self) -> str:
        """The SSH user on the file server."""
        return unquote(urlsplit(self.url).username or "")

    @property
    def path(self) -> str:
        """The node's directory on the file server (or locally for ``file://``)."""
        return unquote(urlsplit(self.url).path).rstrip("/") or "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """``[database]``: the AFT_LOG database (``mysql://``, ``postgresql://`` or ``sqlite://``)."""

    url: str = field(default="sqlite:///var/lib/mft/aft_log.sqlite3", repr=False)
    # Durable local spool for rows while the database is unreachable.
    spool_path: str = ""
    connect_timeout: float = 10.0
    # mysql/postgresql: connections kept in the pool, and the bound on any one statement.
    pool_size: int = 8
    query_timeout: float = 30.0

    def __post_init__(self) -> None:
        check_database_url(self.url)
        if not 1 <= self.pool_size <= 100:
            raise ConfigError("[database] pool_size: between 1 and 100")
        if self.connect_timeout <= 0 or self.query_timeout <= 0:
            raise ConfigError("[database] connect_timeout and query_timeout: more than 0 seconds")

    @property
    def scheme(self) -> str:
        """``mysql``, ``postgresql`` (also for ``postgres://``) or ``sqlite``."""
        scheme = urlsplit(self.url).scheme
        return "postgresql" if scheme == "postgres" else scheme

    @property
    def postgres(self) -> PostgresTarget:
        """The parts of a ``postgresql://`` URL (checked in ``__post_init__``).

        :raises ConfigError: the URL is not a valid PostgreSQL URL.
        """
        return parse_postgres_url(self.url)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs and ``mft check``."""
        return safe_url(self.url)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: the other nodes' public base URLs, for 307 redirects."""

    nodes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmConfig:
    """``[alarm]``: disk-space alarm on the repository."""

    disk_free_min_percent: float = 0.0
    admins: tuple[str, ...] = ()
    check_interval: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.disk_free_min_percent < 100:
            raise ConfigError("[alarm] disk_free_min_percent: between 0 (off) and 100")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration; built by :func:`load_config` or :func:`parse_config`."""

    node: NodeConfig
    xmpp: XmppConfig
    http: HttpConfig
    upload: UploadConfig
    download: DownloadConfig
    repository: RepositoryConfig
    database: DatabaseConfig
    cluster: ClusterConfig
    alarm: AlarmConfig
    scan: ScanConfig = field(default_factory=ScanConfig)
    source: str = ""

    @property
    def allowed_domains(self) -> tuple[str, ...]:
        """Domains whose users may upload: configured, else the XMPP server's own."""
        return self.upload.allowed_domains or (self.xmpp.server_domain,)

    @property
    def spool_path(self) -> Path:
        """Where rows wait while the database is down (next to the config by default)."""
        if self.database.spool_path:
            return Path(self.database.spool_path)
        base = Path(self.source).parent if self.source else Path.cwd()
        return base / f"aft_log-{self.node.id}.spool"


_SECTIONS: dict[str, type[Any]] = {
    "node": NodeConfig,
    "xmpp": XmppConfig,
    "http": HttpConfig,
    "upload": UploadConfig,
    "download": DownloadConfig,
    "repository": RepositoryConfig,
    "database": DatabaseConfig,
    "cluster": ClusterConfig,
    "alarm": AlarmConfig,
    "scan": ScanConfig,
}
_REQUIRED_SECTIONS = ("xmpp", "http")
# A secret may come from a file instead (``secret_file = "/etc/mft/xmpp.secret"``).
_SECRET_KEYS = {("xmpp", "secret"), ("http", "secret"), ("database", "url")}


def parse_config(raw: dict[str, Any], *, source: str = "", base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from an already-parsed TOML document.

    :raises ConfigError: naming the first unknown, missing or ill-typed key.
    """
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]")
    for name in _REQUIRED_SECTIONS:
        if name not in raw:
            raise ConfigError(f"missing section [{name}]")
    base = base_dir or (Path(source).parent if source else Path.cwd())
    sections = {
        name: build_section(cls, raw, name, base, [k for s, k in _SECRET_KEYS if s == name])
        for name, cls in _SECTIONS.items()
    }
    return Config(**sections, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the TOML file at ``path``.

    :raises ConfigError: the file is unreadable, not TOML, or has a bad key.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:  # tomllib requires a binary file
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc
    return parse_config(raw, source=str(p.resolve()), base_dir=p.resolve().parent)
