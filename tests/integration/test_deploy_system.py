"""deploy/systemd/mft.service and deploy/nginx/mft.conf pass their tools' own checks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.common import require_binary

from .ops_helpers import self_signed

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


UNITS = ("mft.service", "mft-purge.service", "mft-purge.timer")


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units with ExecStart pointed at an existing binary (verify checks it exists)."""
    require_binary("systemd-analyze")
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/mft", "/bin/true"))
    return tmp_path


def test_run_command_line() -> None:
    """The service runs `mft run -c /etc/mft/mft.toml`."""
    text = (DEPLOY / "systemd" / "mft.service").read_text()
    assert "ExecStart=/usr/local/bin/mft run -c /etc/mft/mft.toml" in text


def test_systemd_units_verify_cleanly(unit_dir: Path) -> None:
    """systemd-analyze verify prints no warning at all (unknown keys would be warnings)."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", *(str(unit_dir / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if "mft" in line]
    assert proc.returncode == 0 and noise == [], proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["mft.service", "mft-purge.service"])
def test_systemd_services_are_hardened(unit_dir: Path, name: str) -> None:
    """systemd-analyze security rates each service's exposure at 2.0 or less (OK)."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_dir / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(rf"Overall exposure level for {re.escape(name)}: ([\d.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0


def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    """nginx -t accepts deploy/nginx/mft.conf with dummy certificates."""
    nginx = require_binary("nginx", "/usr/sbin/nginx")
    self_signed(tmp_path)
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
