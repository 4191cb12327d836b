"""Configuration parsing: defaults, unknown keys, types, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from component.config import MAX_FILE_SIZE, load_config, parse_config
from component.errors import ConfigError
from tests.fixtures.config import ConfigFactory, make_raw_config

SFTP = "sftp://mft@files.example.com/srv/mft"
# An ed25519 public key in ssh-keyscan form (its shape is all the config checks).
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_defaults_fill_optional_sections(config_factory: ConfigFactory) -> None:
    """Only [xmpp] and [http] are required; the rest takes embedded defaults."""
    cfg = config_factory()
    assert cfg.node.id == "node_1"
    assert cfg.upload.max_file_size == MAX_FILE_SIZE  # 0 means the 4 GiB maximum
    assert cfg.upload.slot_lifetime == 300
    assert cfg.repository.files_per_directory == 1000
    assert cfg.allowed_domains == ("localhost",)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("repository", {"hots": "x"}, "[repository] unknown key 'hots'"),
        ("upload", {"max_file_size": "big"}, "[upload] max_file_size: expected an integer"),
        ("upload", {"max_file_size": -1}, "[upload] max_file_size"),
        ("upload", {"slot_lifetime": 5}, "[upload] slot_lifetime"),
        ("upload", {"mode": "p2p"}, "[upload] mode"),
        ("download", {"require_identity": "yes"}, "expected true or false"),
        ("node", {"id": "node 1/.."}, "[node] id"),
        ("http", {"public_url": "ftp://x"}, "[http] public_url"),
        ("repository", {"url": "sftp://host/path"}, "sftp://user@host:port/path"),
        ("database", {"url": "postgres://x"}, "[database] url"),
        ("database", {"url": "oracle://x"}, "[database] url"),
        ("database", {"url": "redis://db/0"}, "[database] url: unknown scheme 'redis'"),
        ("database", {"url": "mysql://u:pw@db:99999/mft"}, "[database] url: bad port"),
        ("database", {"url": "postgresql://u:pw@db:x/mft"}, "[database] url: bad port"),
        ("database", {"url": "mysql://u:pw@db/mft?tls=1"}, "unknown option 'tls'"),
        ("database", {"url": "mysql://u:pw@db:3306/"}, "give the database name"),
        ("database", {"url": "sqlite://"}, "[database] url 'sqlite://': give the file"),
        ("repository", {"url": "sftp://u@h:0/p"}, "[repository] url 'sftp://u@h:0/p': the port"),
        ("repository", {"url": SFTP, "host_key": "h ssh-ed25519"}, "[repository] host_key"),
        ("repository", {"url": SFTP, "host_key": f"h {PUB}"}, "begins with 'h', which is not"),
        ("repository", {"url": SFTP, "host_key": "h ssh-rsa !!!"}, "key data is not valid"),
        ("repository", {"url": SFTP, "host_key": f"h ssh-rsa {PUB.split()[1]}"}, "holds ssh-ed"),
        ("repository", {"url": SFTP, "host_key": f"@revoked h {PUB}"}, "marker @revoked"),
        ("xmpp", {"muc_domains": "conference.example.com"}, "expected a list of strings"),
        ("http", {"trusted_proxies": ["nginx.local"]}, "[http] trusted_proxies: 'nginx.local'"),
        ("http", {"trusted_proxies": ["10.0.0.0/33"]}, "not an IP address or network"),
        ("http", {"trusted_proxies": "127.0.0.1"}, "expected a list of strings"),
        ("scan", {"clamd": "clamd.ctl"}, "[scan] clamd 'clamd.ctl': use unix://"),
        ("scan", {"clamd": "unix://run/clamd.ctl"}, "use unix:///absolute/path"),
        ("scan", {"clamd": "unix:///" + "d" * 110}, "at most 107 bytes"),
        ("scan", {"clamd": "tcp://:3310"}, "or tcp://host:3310"),
        ("scan", {"clamd": "tcp://clamav:port"}, "or tcp://host:3310"),
        ("scan", {"on_error": "ignore"}, "[scan] on_error 'ignore'"),
        ("scan", {"max_size": -1}, "[scan] max_size"),
        ("scan", {"io_timeout": 0}, "[scan] connect_timeout and io_timeout"),
        ("scan", {"clamd": 3310}, "[scan] clamd: expected a string"),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, section: str, values: dict[str, object], message: str
) -> None:
    """Each bad key or value is reported with its section and key."""
    raw = make_raw_config(tmp_path, **{section: values})
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_missing_required_key_and_section(tmp_path: Path) -> None:
    """A missing required section or key is named."""
    raw = make_raw_config(tmp_path)
    del raw["xmpp"]["secret"]
    with pytest.raises(ConfigError, match=r"\[xmpp\] missing key 'secret'"):
        parse_config(raw)
    raw = make_raw_config(tmp_path)
    del raw["http"]
    with pytest.raises(ConfigError, match=r"missing section \[http\]"):
        parse_config(raw)
    with pytest.raises(ConfigError, match=r"unknown section \[uplaod\]"):
        parse_config({**make_raw_config(tmp_path), "uplaod": {}})


def test_secrets_hidden_from_repr(config_factory: ConfigFactory) -> None:
    """Secrets and the database URL (which may hold a password) never appear in reprs."""
    cfg = config_factory(database={"url": "mysql://mft:hunter2@db:3306/mft"})
    text = repr(cfg)
    assert cfg.xmpp.secret not in text
    assert cfg.http.secret not in text
    assert "hunter2" not in text
    assert cfg.database.safe_url == "mysql://mft:***@db:3306/mft"


def test_secret_file_and_toml_errors(tmp_path: Path) -> None:
    """``*_file`` keys read secrets from files; broken TOML and missing files are clear."""
    (tmp_path / "xmpp.secret").write_text("from-a-file\n")
    (tmp_path / "mft.toml").write_text(
        '[xmpp]\ncomponent_jid = "upload.example.com"\nsecret_file = "xmpp.secret"\n'
        '[http]\npublic_url = "https://upload.example.com"\nsecret = "0123456789abcdefXYZ"\n'
    )
    cfg = load_config(tmp_path / "mft.toml")
    assert cfg.xmpp.secret == "from-a-file"
    assert cfg.xmpp.server_domain == "example.com"
    (tmp_path / "bad.toml").write_text("[xmpp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_repository_url_parts(config_factory: ConfigFactory) -> None:
    """The sftp URL gives host, port, user and path (FILE_SERVER is the host)."""
    cfg = config_factory(
        repository={"url": "sftp://mftuser@files.example.com:2222/opt/mftFileStore/node_1/"}
    )
    repo = cfg.repository
    assert (repo.scheme, repo.host, repo.port, repo.username, repo.path) == (
        "sftp",
        "files.example.com",
        2222,
        "mftuser",
        "/opt/mftFileStore/node_1",
    )


def test_trusted_proxies_are_normalised(tmp_path: Path) -> None:
    """Addresses become networks (host bits dropped); the default trusts nobody."""
    assert parse_config(make_raw_config(tmp_path)).http.trusted_proxies == ()
    raw = make_raw_config(tmp_path, http={"trusted_proxies": ["127.0.0.1", "10.1.2.3/8", "::1"]})
    cfg = parse_config(raw)
    assert cfg.http.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    assert [n.version for n in cfg.http.trusted_networks] == [4, 4, 6]


def test_pinned_host_key_for_the_url_host_loads(config_factory: ConfigFactory) -> None:
    """A well-formed line for the URL's host loads; an empty one waits for `mft keyscan`."""
    cfg = config_factory(repository={"url": SFTP, "host_key": f"files.example.com {PUB} c"})
    assert cfg.repository.host_key.startswith("files.example.com ssh-ed25519")
    assert config_factory(repository={"url": SFTP}).repository.host_key == ""


def test_scan_section(tmp_path: Path) -> None:
    """[scan]: absent or empty clamd is off; unix:// and tcp:// give socket or host/port."""
    assert not parse_config(make_raw_config(tmp_path)).scan.enabled
    assert not parse_config(make_raw_config(tmp_path, scan={"clamd": ""})).scan.enabled
    unix = parse_config(make_raw_config(tmp_path, scan={"clamd": "unix:///run/clamav/clamd.ctl"}))
    assert (unix.scan.enabled, unix.scan.socket_path) == (True, "/run/clamav/clamd.ctl")
    assert unix.scan.on_error == "reject" and unix.scan.max_size == 0
    tcp = parse_config(make_raw_config(tmp_path, scan={"clamd": "tcp://av.example.com"}))
    assert (tcp.scan.socket_path, tcp.scan.host, tcp.scan.port) == ("", "av.example.com", 3310)
