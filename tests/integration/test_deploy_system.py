"""deploy/systemd/mft.service and deploy/nginx/mft.conf pass their tools' own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.common import require_binary

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def unit_file(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at an existing binary (verify checks it exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    text = (DEPLOY / "systemd" / "mft.service").read_text()
    assert "ExecStart=/usr/local/bin/mft run -c /etc/mft/mft.toml" in text
    path = tmp_path / "mft.service"
    path.write_text(text.replace("/usr/local/bin/mft", "/bin/true"))
    return path


def test_systemd_unit_verifies_cleanly(unit_file: Path) -> None:
    """systemd-analyze verify prints no warning at all (unknown keys would be warnings)."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60
    )
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if "mft.service" in line]
    assert proc.returncode == 0 and noise == [], proc.stdout + proc.stderr


def test_systemd_unit_is_hardened(unit_file: Path) -> None:
    """systemd-analyze security rates the unit's exposure at 2.0 or less (OK)."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for mft\.service: ([\d.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0


def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    """nginx -t accepts deploy/nginx/mft.conf with dummy certificates."""
    nginx = require_binary("nginx", "/usr/sbin/nginx")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=upload.example.com",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = (DEPLOY / "nginx" / "mft.conf").read_text()
    live = "/etc/letsencrypt/live/upload.example.com"
    assert f"{live}/fullchain.pem" in site
    site = site.replace(f"{live}/fullchain.pem", str(tmp_path / "cert.pem"))
    site = site.replace(f"{live}/privkey.pem", str(tmp_path / "key.pem"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    proc = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def test_nginx_example_streams() -> None:
    """The example turns off request and response buffering and the body size limit."""
    site = (DEPLOY / "nginx" / "mft.conf").read_text()
    for directive in (
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "proxy_set_header Range $http_range;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_read_timeout 600s;",
    ):
        assert directive in site
