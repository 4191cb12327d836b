"""The ``[repository] host_key`` line, checked without an SSH library (at config load).

One line as ``ssh-keyscan`` prints it: ``host key-type base64 [comment]``, the host
field plain, ``[host]:port`` for a port other than 22, or hashed (``ssh-keyscan -H``).
The key itself is read by :mod:`httpd.repository.sshkeys`; here only its shape and
the host it is pinned for are checked, so a malformed line stops every command.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

from component.errors import ConfigError

DEFAULT_PORT = 22
KEY = "[repository] host_key"


@dataclass(frozen=True, slots=True)
class HostKeyEntry:
    """One parsed ``known_hosts``/``ssh-keyscan`` line (the key still in base64)."""

    hosts: str
    key_type: str
    key_data: str

    @property
    def public_text(self) -> str:
        """``key-type base64``, as SSH libraries import a public key."""
        return f"{self.key_type} {self.key_data}"

    def matches(self, host: str, port: int) -> bool:
        """Whether the host field names ``host`` (and ``port``, when bracketed).

        A plain ``host`` entry is accepted for any port; ``[host]:port`` only for that
        port. Hashed entries (``ssh-keyscan -H``) are checked the way ssh does.
        """
        wanted = {host.lower()}
        if port != DEFAULT_PORT:
            wanted.add(f"[{host.lower()}]:{port}")
        for entry in self.hosts.split(","):
            if entry.startswith("|1|"):
                if any(_hashed_match(entry, name) for name in wanted):
                    return True
            elif entry.lower() in wanted:
                return True
        return False


def host_pattern(host: str, port: int) -> str:
    """The host field ssh-keyscan prints: ``host``, or ``[host]:port`` when not port 22."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _hashed_match(entry: str, name: str) -> bool:
    try:
        _, _, salt, digest = entry.split("|")
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False


def _blob_type(data: str) -> str:
    """The key type written inside the base64 blob (SSH wire format: length + name).

    :raises ValueError: not base64, or too short to hold a type name.
    """
    blob = base64.b64decode(data, validate=True)
    if len(blob) < 4:
        raise ValueError("too short")
    (n,) = struct.unpack(">I", blob[:4])
    if not 0 < n <= len(blob) - 4:
        raise ValueError("no key type")
    return blob[4 : 4 + n].decode("ascii")


def parse_host_key_entry(line: str) -> HostKeyEntry:
    """Parse one ``ssh-keyscan`` line.

    :raises ConfigError: empty, a marker line (``@cert-authority``), too few fields, or a
        key whose base64 does not decode to a key of the named type.
    """
    fields = line.strip().split()
    if not fields:
        raise ConfigError(f"{KEY} is empty: pin the line printed by 'mft keyscan HOST -p PORT'")
    if fields[0].startswith("@"):
        raise ConfigError(f"{KEY}: marker {fields[0]} is not supported")
    if len(fields) < 3:
        raise ConfigError(f"{KEY}: expected 'host key-type base64' as ssh-keyscan prints it")
    hosts, kind, data = fields[:3]
    try:
        inner = _blob_type(data)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ConfigError(f"{KEY}: cannot read the key: {kind} key data is not valid") from None
    if inner != kind:
        raise ConfigError(f"{KEY}: cannot read the key: it says {kind} but holds {inner}")
    return HostKeyEntry(hosts, kind, data)


def check_host_key(line: str, host: str, port: int) -> HostKeyEntry:
    """The pinned line, checked against the repository URL's host and port.

    :raises ConfigError: malformed (see :func:`parse_host_key_entry`), or it does not
        begin with the URL's host.
    """
    entry = parse_host_key_entry(line)
    if not entry.matches(host, port):
        raise ConfigError(
            f"{KEY} begins with {entry.hosts!r}, which is not the url's host "
            f"{host_pattern(host, port)!r}: pin the line printed by "
            f"'mft keyscan {host} -p {port}'"
        )
    return entry
