"""SSH keys of a node: the pinned file-server host key, the node's own key pair.

``[repository] host_key`` is one line as ``ssh-keyscan`` prints it
(``host ssh-rsa AAAA...``, or ``[host]:port ...`` for a port other than 22) and must
begin with the repository URL's host. ``mft keygen`` makes the node key that the file
server's ``authorized_keys`` trusts; ``mft keyscan`` prints the line to pin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from component.config import Config, RepositoryConfig
from component.errors import ConfigError
from component.hostkey import (
    DEFAULT_PORT,
    HostKeyEntry,
    check_host_key,
    host_pattern,
    parse_host_key_entry,
)

# ssh-keyscan's key types (-t) and the host key algorithms that ask a server for them.
KEY_TYPES: dict[str, tuple[str, ...]] = {
    "rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ecdsa": ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    "ed25519": ("ssh-ed25519",),
}


@dataclass(frozen=True, slots=True)
class HostKeyLine:
    """One parsed ``known_hosts``/``ssh-keyscan`` line with its key read."""

    hosts: str
    key: asyncssh.SSHKey

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        return fingerprint(self.key)


def fingerprint(key: asyncssh.SSHKey) -> str:
    """The key's SHA256 fingerprint, ``SHA256:base64``."""
    return str(key.get_fingerprint("sha256"))


def public_line(key: asyncssh.SSHKey) -> str:
    """``type base64`` without a comment."""
    kind, b64, *_ = key.export_public_key("openssh").decode().split()
    return f"{kind} {b64}"


def _import(entry: HostKeyEntry) -> HostKeyLine:
    try:
        key = asyncssh.import_public_key(entry.public_text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ConfigError(f"[repository] host_key: cannot read the key: {exc}") from exc
    return HostKeyLine(entry.hosts, key)


def parse_host_key_line(line: str) -> HostKeyLine:
    """Parse one ``ssh-keyscan`` line (its shape: :func:`component.hostkey.parse_host_key_entry`).

    :raises ConfigError: empty, a marker line (``@cert-authority``), or an unreadable key.
    """
    return _import(parse_host_key_entry(line))


def pinned_host_key(repo: RepositoryConfig) -> HostKeyLine:
    """The configured host key, checked against the repository URL's host and port.

    :raises ConfigError: unreadable, or it does not begin with the URL's host.
    """
    return _import(check_host_key(repo.host_key, repo.host, repo.port))


def load_client_key(path: str | os.PathLike[str]) -> asyncssh.SSHKey:
    """The node's private key.

    :raises ConfigError: missing, unreadable or passphrase-protected.
    """
    try:
        return asyncssh.read_private_key(Path(path))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"[repository] client_key {path} does not exist: create it with 'mft keygen -c FILE'"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"[repository] client_key {path}: {exc.strerror or exc}") from exc
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ConfigError(
            f"[repository] client_key {path}: not an unencrypted private key ({exc})"
        ) from exc


def _write_exclusive(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start (never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # refuses an existing key even if one appeared meanwhile
    finally:
        tmp.unlink(missing_ok=True)


def generate_node_key(path: Path, comment: str, *, force: bool = False) -> asyncssh.SSHKey:
    """Create an ed25519 key pair at ``path`` (0600) and ``path.pub``.

    :raises FileExistsError: ``path`` exists and ``force`` is false.
    """
    if path.exists() and not force:
        raise FileExistsError(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    _write_exclusive(path, key.export_private_key("openssh"), 0o600, replace=force)
    pub = path.with_name(path.name + ".pub")
    _write_exclusive(pub, key.export_public_key("openssh"), 0o644, replace=True)
    return key


def authorized_keys_line(key: asyncssh.SSHKey) -> str:
    """The public line to paste into the file server's ``authorized_keys``."""
    return key.export_public_key("openssh").decode().strip()


async def keygen_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft keygen -c FILE [--force | --show]``: make or show the node's key pair."""
    assert cfg is not None  # the CLI insists on a configuration for keygen
    path = Path(cfg.repository.client_key)
    comment = f"mft@{cfg.node.id}"
    if args.show:
        try:
            key = load_client_key(path)
        except ConfigError as exc:
            print(f"mft keygen: {exc}", file=sys.stderr)
            return 1
        print(authorized_keys_line(key))
        return 0
    try:
        key = await asyncio.to_thread(generate_node_key, path, comment, force=args.force)
    except FileExistsError:
        print(
            f"mft keygen: {path} exists; use --show to print its public line, "
            "or --force to replace it (the file server must then trust the new line)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"mft keygen: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(
        f"# private key written to {path} (mode 0600); add this line to the file", file=sys.stderr
    )
    print("# server's ~/.ssh/authorized_keys of the transfer user:", file=sys.stderr)
    print(authorized_keys_line(key))
    return 0


async def scan_host_key(
    host: str, port: int = DEFAULT_PORT, key_type: str = "", within: float = 15.0
) -> asyncssh.SSHKey | None:
    """The host key ``host:port`` presents for ``key_type`` (any type if empty).

    :raises OSError: the server cannot be reached.
    :raises asyncssh.Error: the handshake failed (e.g. no key of that type).
    """
    algs = list(KEY_TYPES[key_type]) if key_type else ()
    async with asyncio.timeout(within):
        return await asyncssh.get_server_host_key(host, port, server_host_key_algs=algs, config=[])


def key_type(key: asyncssh.SSHKey) -> str:
    """The key's type as ``ssh-keyscan -t`` names it (``rsa``, ``ecdsa``, ``ed25519``),
    or its algorithm name for any other type."""
    algs = {alg.decode() for alg in key.sig_algorithms}
    for name, type_algs in KEY_TYPES.items():
        if algs.intersection(type_algs):
            return name
    return str(key.get_algorithm())


async def offered_key_types(host: str, port: int = DEFAULT_PORT, within: float = 15.0) -> list[str]:
    """The types of :data:`KEY_TYPES` that ``host:port`` has a host key of (asked at once).

    An empty list when none answered, whatever the reason (unreachable, going down).
    """

    async def has(kind: str) -> bool:
        try:
            return await scan_host_key(host, port, kind, within) is not None
        except (asyncssh.Error, OSError, TimeoutError):
            return False

    found = await asyncio.gather(*(has(kind) for kind in KEY_TYPES))
    return [kind for kind, ok in zip(KEY_TYPES, found, strict=True) if ok]


async def keyscan_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft keyscan HOST [-p PORT] [-t TYPE]``: print the line to pin and its fingerprint.

    Without ``-t`` every type the server has (rsa, ecdsa, ed25519) is printed, one line
    each, like ``ssh-keyscan``; each is followed by a ``#`` comment with its SHA256
    fingerprint to compare with ``ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub``.
    """
    types = [args.type] if args.type else list(KEY_TYPES)
    unknown = [t for t in types if t not in KEY_TYPES]
    if unknown:
        print(
            f"mft keyscan: unknown key type {unknown[0]!r} (use rsa, ecdsa or ed25519)",
            file=sys.stderr,
        )
        return 2
    found = 0
    for key_type in types:
        try:
            key = await scan_host_key(args.host, args.port, key_type)
        except (asyncssh.Error, ConnectionResetError) as exc:
            # OpenSSH drops the connection when it has no host key of the asked type.
            if args.type:
                reason = getattr(exc, "reason", "") or "the server closed the connection"
                print(f"mft keyscan: no {key_type} host key: {reason}", file=sys.stderr)
            continue
        except (OSError, TimeoutError) as exc:
            print(f"mft keyscan: {args.host}:{args.port} unreachable: {exc}", file=sys.stderr)
            return 1
        if key is None:
            continue
        found += 1
        print(f"{host_pattern(args.host, args.port)} {public_line(key)}")
        print(f"# {fingerprint(key)} ({key_type})")
    return 0 if found else 1
