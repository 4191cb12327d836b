"""The sandbox's local CA: names, reuse across runs, and the name constraints that keep a
trusted sandbox CA from vouching for any other site."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from component.servers.localca import LocalCA, ensure_local_ca

NAMES = ["localhost", "upload.localhost", "conference.localhost"]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_is_signed_by_the_ca_for_names_and_loopback(tmp_path: Path) -> None:
    """server.crt: signed by ca.crt, SANs = the names + 127.0.0.1 and ::1; keys are 0600."""
    ca = ensure_local_ca(tmp_path / "tls", NAMES, label="t")
    server, root = _cert(ca.server_cert), _cert(ca.ca_cert)
    server.verify_directly_issued_by(root)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == NAMES
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (ca.server_key, tmp_path / "tls" / "ca.key"):
        assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert len(ca.fingerprint().split(":")) == 32


def test_second_run_keeps_the_ca_and_certificate(tmp_path: Path) -> None:
    """Same names again: the files are not touched (a CA trusted once stays trusted)."""
    first = ensure_local_ca(tmp_path, NAMES, label="t")
    before = [p.read_bytes() for p in (first.ca_cert, first.server_cert, first.server_key)]
    again = ensure_local_ca(tmp_path, NAMES, label="t")
    assert [p.read_bytes() for p in (again.ca_cert, again.server_cert, again.server_key)] == before


def test_lost_server_certificate_is_remade_under_the_same_ca(tmp_path: Path) -> None:
    """A missing server.crt is made again; the CA (and so the user's trust) stays."""
    first = ensure_local_ca(tmp_path, NAMES, label="t")
    ca_bytes = first.ca_cert.read_bytes()
    first.server_cert.unlink()
    again = ensure_local_ca(tmp_path, NAMES, label="t")
    assert again.ca_cert.read_bytes() == ca_bytes
    _cert(again.server_cert).verify_directly_issued_by(_cert(again.ca_cert))


def test_other_domain_gets_a_ca_constrained_to_it(tmp_path: Path) -> None:
    """--domain example.test: the old CA cannot sign it, so a new CA is made that can."""
    first = ensure_local_ca(tmp_path, NAMES, label="t")
    old = first.fingerprint()
    names = ["example.test", "upload.example.test", "localhost"]
    again = ensure_local_ca(tmp_path, names, label="t")
    assert again.fingerprint() != old
    constraints = _cert(again.ca_cert).extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = constraints.value.permitted_subtrees or []
    assert {n.value for n in permitted if isinstance(n, x509.DNSName)} == {
        "example.test",
        "localhost",
    }


def _sign_other_site(ca: LocalCA, directory: Path, name: str) -> Path:
    """A certificate for ``name`` signed with the sandbox CA's key (as a thief could)."""
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(_cert(ca.ca_cert).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_trusting_the_ca_cannot_vouch_for_another_site(tmp_path: Path) -> None:
    """OpenSSL accepts the sandbox's server certificate but refuses one for example.com
    signed with the same CA key (name constraints)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    ca = ensure_local_ca(tmp_path, NAMES, label="t")
    evil = _sign_other_site(ca, tmp_path, "example.com")

    def verify(cert: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [openssl, "verify", "-CAfile", str(ca.ca_cert), str(cert)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert verify(ca.server_cert).returncode == 0
    refused = verify(evil)
    assert refused.returncode != 0
    assert "permitted subtree violation" in refused.stdout + refused.stderr
