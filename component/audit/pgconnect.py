"""How the PostgreSQL back-end connects and how it reports failures.

libpq's ``sslmode``/``sslrootcert`` as asyncpg's ``ssl=``, the pool's reset, the errors
that mean "the database is not there", and short reasons for logs, ``mft run`` and
``mft check`` (the server's message and SQLSTATE, or host and port of a refused
connection). No secrets: a target's password is never part of a reason.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import asyncpg

from component.dburl import PostgresTarget

# What a lost server, a dropped connection, a refused login or a bounded wait raise.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,  # refused, reset, unresolvable, TLS failures (ssl.SSLError)
    EOFError,
    TimeoutError,
)


def ssl_setting(t: PostgresTarget) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl=`` for libpq's ``sslmode`` (and ``sslrootcert``).

    As libpq: ``require`` encrypts without checking the certificate unless a root
    certificate is given; ``verify-ca`` checks the chain; ``verify-full`` also the name.

    :raises OSError: ``sslrootcert`` cannot be read.
    :raises ssl.SSLError: it holds no usable certificate.
    """
    if t.sslmode == "disable":
        return False
    if t.sslmode in ("allow", "prefer"):
        return t.sslmode
    ctx = ssl.create_default_context(cafile=t.sslrootcert or None)
    if t.sslmode == "require" and not t.sslrootcert:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = t.sslmode == "verify-full"
    return ctx


async def keep_session(conn: Any) -> None:
    """A pooled connection goes back as it is (asyncpg still rolls back an open transaction)."""


def refused(exc: BaseException) -> bool:
    """Whether the server answered that the statement failed (so nothing was committed),
    rather than the connection failing on the way (outcome unknown)."""
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    # 08 connection, 57 operator intervention (shutdown), 58 system, XX internal errors
    # can cut a statement off around its commit; anything else is a plain refusal.
    return str(exc.sqlstate or "XX")[:2] not in ("08", "57", "58", "XX")


def describe(exc: BaseException, target: PostgresTarget | None = None) -> str:
    """A short reason for logs and errors: the server's message and SQLSTATE, or what the
    network said (``connection refused by 127.0.0.1:5432``)."""
    where = ""
    if target is not None:
        where = f" {target.host}" if target.unix_socket else f" {target.host}:{target.port}"
    if isinstance(exc, TimeoutError):
        return f"no answer from{where or ' the server'} (timed out)"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{exc.args[0] if exc.args else type(exc).__name__} ({exc.sqlstate})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of{where} not accepted: {exc.verify_message}"
    if target is not None and target.unix_socket and isinstance(exc, OSError):
        # No server (or a stale socket) in that directory: say which file was tried.
        sock = f"{target.host.rstrip('/')}/.s.PGSQL.{target.port}"
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return f"no PostgreSQL server listens on the socket {sock}"
        return f"{exc.strerror or exc} ({sock})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by{where or ' the server'}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve{where or ' the host'} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{' (' + where.strip() + ')' if where else ''}"
    return str(exc) or type(exc).__name__
