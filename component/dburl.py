"""Database URLs that need more than a scheme check: ``mysql://`` with its options.

:mod:`component.config` calls the parser when the file is loaded, so a bad option is
reported at start by name; the back-end reads the same target and never parses the
URL itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from component.errors import ConfigError


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
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise ConfigError(f"[database] url: bad port ({exc})") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError("[database] url: give the database name, mysql://user:pw@host/db")
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
