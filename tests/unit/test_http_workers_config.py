"""``[http] workers``: parsing, the per-worker config, and the shared port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from component.config import usable_cpus
from component.errors import ConfigError
from httpd.ops.workers import reserved_port, worker_config, worker_spool_path
from tests.fixtures.config import ConfigFactory


def test_workers_default_to_the_usable_cpus(config_factory: ConfigFactory) -> None:
    """0 (the default) becomes the CPU count of the affinity mask, at least 1."""
    assert config_factory().http.workers == usable_cpus() >= 1
    assert config_factory(http={"workers": 3}).http.workers == 3


@pytest.mark.parametrize("bad", [-1, 65, 1000])
def test_workers_out_of_range_are_refused(config_factory: ConfigFactory, bad: int) -> None:
    """Negative or absurd worker counts are a configuration error naming the key."""
    with pytest.raises(ConfigError, match=r"\[http\] workers"):
        config_factory(http={"workers": bad})


def test_worker_config_has_its_own_spool_and_the_shared_port(
    config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """Worker 2 gets spool.http2 beside the service's spool and the resolved port."""
    cfg = config_factory(database={"spool_path": str(tmp_path / "aft.spool")})
    mine = worker_config(cfg, 2, 40123)
    assert mine.spool_path == tmp_path / "aft.http2.spool"
    assert worker_spool_path(cfg.spool_path, 2) == mine.spool_path
    assert mine.http.port == 40123
    assert (mine.http.secret, mine.node, mine.repository) == (
        cfg.http.secret,
        cfg.node,
        cfg.repository,
    )


def test_port_zero_is_reserved_for_reuseport_listeners() -> None:
    """Port 0 becomes one port that two SO_REUSEPORT listeners can share while it is held."""
    with reserved_port("127.0.0.1", 0) as port:
        assert port > 0
        listeners = []
        try:
            for _ in range(2):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
                listeners.append(sock)
            # A program without SO_REUSEPORT cannot take it meanwhile.
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        finally:
            for sock in listeners:
                sock.close()


def test_a_fixed_port_is_passed_through() -> None:
    """A configured port is used as it is, with nothing bound by the supervisor."""
    with reserved_port("127.0.0.1", 5443) as port:
        assert port == 5443
