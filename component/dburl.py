"""URLs in the configuration: ``[database] url`` checked whole when the file is loaded
(``postgresql://`` as libpq spells it, ``mysql://`` with its options), ports, and
:func:`safe_url` for printing any of them without its password.

:mod:`component.config` calls :func:`check_database_url` at load, so a bad option is
reported at start by name; the back-ends read the same :class:`PostgresTarget` /
:class:`MysqlTarget` and never parse the URL themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from component.errors import ConfigError

# libpq's sslmode values; verify-ca/verify-full check the server's certificate.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PG_OPTIONS = ("host", "sslmode", "sslrootcert")


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresTarget:
    """Where and as whom to connect, from a ``postgresql://`` URL (percent-decoded)."""

    database: str
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = "localhost"  # a directory (starting with /) means a Unix socket there
    port: int = 5432
    sslmode: str = "prefer"
    sslrootcert: str = ""

    @property
    def unix_socket(self) -> bool:
        """Whether ``host`` is a socket directory rather than a host name."""
        return self.host.startswith("/")


def _server_and_database(parts: SplitResult, default_port: int, scheme: str) -> tuple[int, str]:
    """The port (``default_port`` if none) and the database name of a server URL.

    :raises ConfigError: a port that is not a number up to 65535, or no database name.
    """
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"[database] url: bad port ({exc})") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError(f"[database] url: give the database name, {scheme}://user:pw@host/db")
    return port, database


def parse_postgres_url(url: str) -> PostgresTarget:
    """``postgresql://user:pw@host:port/db[?host=/run/postgresql][&sslmode=..][&sslrootcert=..]``.

    ``postgres://`` is the same; options are spelled as libpq spells them.

    :raises ConfigError: no database name, a bad port, an unknown option or sslmode.
    """
    parts = urlsplit(url)
    where = "[database] url"
    port, database = _server_and_database(parts, 5432, "postgresql")
    options: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name not in _PG_OPTIONS:
            raise ConfigError(f"{where}: unknown option {name!r} (known: {', '.join(_PG_OPTIONS)})")
        options[name] = values[-1]
    sslmode = options.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise ConfigError(f"{where}: sslmode {sslmode!r}: use one of {', '.join(SSL_MODES)}")
    socket_dir = options.get("host", "")
    if socket_dir and not socket_dir.startswith("/"):
        raise ConfigError(f"{where}: host= is a socket directory such as /run/postgresql")
    if options.get("sslrootcert") and sslmode in ("disable", "allow", "prefer"):
        raise ConfigError(f"{where}: sslrootcert needs sslmode=require, verify-ca or verify-full")
    return PostgresTarget(
        database=database,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=socket_dir or parts.hostname or "localhost",
        port=port,
        sslmode=sslmode,
        sslrootcert=options.get("sslrootcert", ""),
    )


@dataclass(frozen=True, slots=True)
class MysqlTarget:
    """Where and as whom to connect, from the ``mysql://`` URL."""

    database: str
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = "localhost"
    port: int = 3306
    unix_socket: str | None = None


def parse_mysql_url(url: str) -> MysqlTarget:
    """``mysql://user:pw@host:port/db[?unix_socket=/path]`` with percent-decoded parts.

    :raises ConfigError: the URL has no database name, a bad port or unknown options.
    """
    parts = urlsplit(url)
    port, database = _server_and_database(parts, 3306, "mysql")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - {"unix_socket"})
    if unknown:
        raise ConfigError(f"[database] url: unknown option {unknown[0]!r} (known: unix_socket)")
    sockets = options.get("unix_socket")
    return MysqlTarget(
        database=database,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        host=parts.hostname or "localhost",
        port=port,
        unix_socket=sockets[-1] if sockets else None,
    )


# [database] url schemes a back-end serves. ``postgres`` is libpq's other spelling.
DATABASE_SCHEMES = ("sqlite", "mysql", "postgresql", "postgres")
DATABASE_USAGE = (
    "use sqlite:///path, mysql://user:pw@host:port/db or postgresql://user:pw@host:port/db"
)


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for output and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_port(key: str, url: str) -> None:
    """:raises ConfigError: the URL's port is not a number from 1 to 65535."""
    try:
        port = urlsplit(url).port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{key} {url!r}: the port must be a number from 1 to 65535")


def check_database_url(url: str) -> None:
    """Check ``[database] url`` now, not at first connect: its scheme, then the back-end's
    own rules (port, database name, options).

    :raises ConfigError: naming the key and what is wrong.
    """
    parts = urlsplit(url)
    if parts.scheme not in DATABASE_SCHEMES:
        raise ConfigError(f"[database] url: unknown scheme {parts.scheme!r}: {DATABASE_USAGE}")
    if parts.scheme == "sqlite":
        if not (parts.netloc + parts.path).strip("/"):
            raise ConfigError(f"[database] url {url!r}: give the file, sqlite:///path")
    elif parts.scheme == "mysql":
        parse_mysql_url(url)
    else:
        parse_postgres_url(url)
