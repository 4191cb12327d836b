"""A local certificate authority for the sandbox: one CA and one server certificate.

``mft sandbox --https`` serves uploads over HTTPS and Prosody's c2s TLS with a certificate
this CA signed, so a client that trusts the CA (Gajim and Dino through the system store)
connects and uploads without a certificate warning. The CA is name-constrained to the
sandbox's names and to loopback addresses: trusting it cannot vouch for any other site,
even if its key, which lies unencrypted in the sandbox directory, is copied.

Files (in the directory given, mode 0600 for keys): ``ca.crt``, ``ca.key``,
``server.crt``, ``server.key``. They are made once and reused while they still cover the
names asked for, so a CA trusted once stays trusted across runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
SERVER_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
CA_DAYS = 825
SERVER_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class LocalCA:
    """Paths of the CA certificate and of the server's key pair."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the CA certificate, hex with colons (as browsers show it)."""
        cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def ensure_local_ca(directory: Path, dns_names: list[str], *, label: str) -> LocalCA:
    """The CA and a server certificate for ``dns_names`` + 127.0.0.1 and ::1 in ``directory``.

    Existing files are kept when the CA's name constraints and the server certificate
    still cover ``dns_names`` and neither expires within 30 days; otherwise the missing
    or stale part is made again (a new CA only when the old one cannot sign the names).

    :param directory: where the four files live (created, mode 0700).
    :param dns_names: host names the server certificate must carry (first: subject CN).
    :param label: names the CA in its subject, e.g. the sandbox directory.
    :raises OSError: the files cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    paths = LocalCA(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    ca_key_path = directory / "ca.key"
    ca = _load(paths.ca_cert, ca_key_path)
    if ca is None or not _ca_covers(ca[0], dns_names):
        ca = _make_ca(dns_names, label)
        _write(paths.ca_cert, ca_key_path, *ca)
        log.info("sandbox CA made: %s", paths.ca_cert)
    server = _load(paths.server_cert, paths.server_key)
    if server is None or not _server_fits(server[0], ca[0], dns_names):
        server = _make_server(dns_names, *ca)
        _write(paths.server_cert, paths.server_key, *server)
    return paths


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return None
    return cert, key


def _write(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca_covers(ca: x509.Certificate, dns_names: list[str]) -> bool:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return False
    permitted = {
        str(n.value) for n in constraints.permitted_subtrees or () if isinstance(n, x509.DNSName)
    }
    return all(_permitted(name, permitted) for name in dns_names)


def _permitted(name: str, permitted: set[str]) -> bool:
    # RFC 5280 4.2.1.10: a DNS constraint covers the name itself and its subdomains.
    return any(name == p or name.endswith("." + p) for p in permitted)


def _server_fits(cert: x509.Certificate, ca: x509.Certificate, dns_names: list[str]) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # another CA's: make a new one
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(dns_names) <= set(san.get_values_for_type(x509.DNSName))


def _constraint_roots(dns_names: list[str]) -> list[str]:
    """The shortest names covering ``dns_names`` (``upload.localhost`` is under ``localhost``)."""
    roots = sorted(set(dns_names), key=len)
    kept: list[str] = []
    for name in roots:
        if not _permitted(name, set(kept)):
            kept.append(name)
    return kept


def _make_ca(
    dns_names: list[str], label: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xmpp-mft sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"xmpp-mft sandbox CA ({label})"[:64]),
        ]
    )
    now = _now()
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in _constraint_roots(dns_names)]
    permitted += [x509.IPAddress(net) for net in LOOPBACK]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_server(
    dns_names: list[str], ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
    alt += [x509.IPAddress(ip) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key
