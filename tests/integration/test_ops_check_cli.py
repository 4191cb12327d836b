"""`mft check` as a subprocess against real servers: all OK, then broken configurations.

The XMPP router is the ejabberd fixture (the deploy snippet's listener); a bare
slixmpp component holding the JID stands in for the running service, and the real HTTP
app answers /healthz. The full `mft run` case is in test_ops_running_service.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fixtures.common import free_port
from tests.fixtures.config import ConfigFactory
from tests.fixtures.ejabberd import EjabberdServer
from tests.unit.httpd_harness import httpd_env

from .ops_helpers import HTTP_SECRET, mft, write_node_config
from .xmpp_helpers import bare_component, disco_items

pytestmark = pytest.mark.integration


def write_config(
    tmp_path: Path, ej: EjabberdServer, http_port: int, *, secret: str, db_url: str = ""
) -> Path:
    """An mft.toml for this test's servers."""
    return write_node_config(
        tmp_path,
        component_jid=ej.component_jid,
        secret=secret,
        xmpp_port=ej.component_port,
        http_port=http_port,
        db_url=db_url,
    )


@pytest.fixture
async def healthz(config_factory: ConfigFactory) -> AsyncIterator[int]:
    """The real HTTP app serving on loopback (its own repository and database)."""
    async with httpd_env(config_factory()) as env:
        yield env.port


async def test_all_ok_with_service_running(
    tmp_path: Path, ejabberd: EjabberdServer, healthz: int
) -> None:
    """Every line OK, exit 0, and neither secret appears."""
    cfg = write_config(tmp_path, ejabberd, healthz, secret=ejabberd.secret)
    async with bare_component(
        ejabberd.component_jid, ejabberd.secret, ejabberd.component_port
    ) as service:
        code, out = await mft("check", "-c", str(cfg))
        # ejabberd balances over several connections of one component: the running
        # service must still be connected and served after the check's handshake.
        jids = await disco_items(service, ejabberd.domain)
    assert ejabberd.component_jid in jids
    lines = out.splitlines()
    assert code == 0, out
    assert [line.split()[0] for line in lines] == ["OK"] * 6 + ["WARN", "OK"], out
    assert lines[-2].startswith("WARN  share reports     no share report since the service")
    assert lines[-1].startswith("OK    scanner           off")
    assert "handshake accepted" in out
    assert "AFT_LOG present" in out and "answers 200" in out
    assert ejabberd.secret not in out and HTTP_SECRET not in out


async def test_service_not_connected_is_ok(
    tmp_path: Path, ejabberd: EjabberdServer, healthz: int
) -> None:
    """Before the service starts the handshake itself is accepted: still OK."""
    cfg = write_config(tmp_path, ejabberd, healthz, secret=ejabberd.secret)
    code, out = await mft("check", "-c", str(cfg))
    assert code == 0, out
    assert "handshake accepted" in out


async def test_wrong_xmpp_secret_fails(
    tmp_path: Path, ejabberd: EjabberdServer, healthz: int
) -> None:
    """A wrong secret: FAIL on the XMPP line with a hint, exit 1, secret not printed."""
    wrong = "wrong-secret-" + ejabberd.secret
    cfg = write_config(tmp_path, ejabberd, healthz, secret=wrong)
    code, out = await mft("check", "-c", str(cfg))
    assert code == 1
    [xmpp] = [line for line in out.splitlines() if "xmpp router" in line]
    assert xmpp.startswith("FAIL") and "not-authorized" in xmpp and "hint:" in xmpp
    assert wrong not in out and ejabberd.secret not in out


async def test_unusable_database_fails(
    tmp_path: Path, ejabberd: EjabberdServer, healthz: int
) -> None:
    """A database that cannot be opened: FAIL on the database line, exit 1."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cfg = write_config(
        tmp_path, ejabberd, healthz, secret=ejabberd.secret,
        db_url=f"sqlite:///{blocker}/aft.sqlite3",
    )  # fmt: skip
    code, out = await mft("check", "-c", str(cfg))
    assert code == 1
    [db] = [line for line in out.splitlines() if line.split()[1:2] == ["database"]]
    assert db.startswith("FAIL")


async def test_unreachable_mysql_fails_without_password(
    tmp_path: Path, ejabberd: EjabberdServer, healthz: int
) -> None:
    """mysql:// to a closed port: FAIL, the URL shown with *** for the password."""
    pytest.importorskip("component.audit.mysql")
    password = "db-password-never-printed"
    url = f"mysql://mft:{password}@127.0.0.1:{free_port()}/mft"
    cfg = write_config(tmp_path, ejabberd, healthz, secret=ejabberd.secret, db_url=url)
    code, out = await mft("check", "-c", str(cfg))
    assert code == 1
    [db] = [line for line in out.splitlines() if line.split()[1:2] == ["database"]]
    assert db.startswith("FAIL") and "mysql://mft:***@127.0.0.1" in db
    assert password not in out


async def test_mariadb_ok_without_password(
    request: pytest.FixtureRequest, tmp_path: Path, ejabberd: EjabberdServer, healthz: int
) -> None:
    """A real MariaDB: database OK, AFT_LOG present, the password shown as ***."""
    pytest.importorskip("component.audit.mysql")
    url: str = request.getfixturevalue("mariadb_url")
    password = urlsplit(url).password
    assert password
    cfg = write_config(tmp_path, ejabberd, healthz, secret=ejabberd.secret, db_url=url)
    code, out = await mft("check", "-c", str(cfg))
    [db] = [line for line in out.splitlines() if line.split()[1:2] == ["database"]]
    assert db.startswith("OK") and "AFT_LOG present" in db and ":***@" in db
    assert "MariaDB 10." in db  # the server version it reached
    assert password not in out
    assert code == 0, out


async def test_nothing_running_warns_for_http(tmp_path: Path, ejabberd: EjabberdServer) -> None:
    """No HTTP server on this host: the public URL line is WARN, not FAIL."""
    cfg = write_config(tmp_path, ejabberd, free_port(), secret=ejabberd.secret)
    code, out = await mft("check", "-c", str(cfg))
    [http] = [line for line in out.splitlines() if "http public url" in line]
    assert http.startswith("WARN") and "not running here" in http
    assert code == 0, out
