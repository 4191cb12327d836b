"""Slot paths, file-name rules and the HH.n roll-over."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from component.errors import InvalidRequest
from component.layout import DirectoryAllocator, SlotPath, check_filename, file_type, new_resource

RES = "A" * 24


def test_resource_names_are_random_and_url_safe() -> None:
    """Resource names carry at least 128 random bits and only URL-safe characters."""
    names = {new_resource() for _ in range(1000)}
    assert len(names) == 1000
    assert all(len(n) >= 22 and n.replace("-", "").replace("_", "").isalnum() for n in names)


@pytest.mark.parametrize(
    "segments",
    [
        ("node_1", "im", "20260101", "10", "..", "f"),
        ("node_1", "im", "20260101", "..", RES, "f"),
        ("node_1", "files", "20260101", "10", RES, "f"),
        ("node_1", "im", "2026010", "10", RES, "f"),
        ("node_1", "im", "20260101", "24", RES, "f"),
        ("node_1", "im", "20260101", "10.0", RES, "f"),
        ("node_1", "im", "20260101", "10", "short", "f"),
        ("node_1", "im", "20260101", "10", RES + "/..", "f"),
        ("../x", "im", "20260101", "10", RES, "f"),
        ("node_1", "im", "20260101", "10", RES, "../../etc/passwd"),
        ("node_1", "im", "20260101", "10", RES, ".."),
        ("node_1", "im", "20260101", "10", RES, "a\x00b"),
    ],
)
def test_path_tricks_are_refused(segments: tuple[str, ...]) -> None:
    """Every URL segment is validated; nothing odd reaches a filesystem path."""
    with pytest.raises(InvalidRequest):
        SlotPath.parse(*segments)


def test_paths_and_encoding() -> None:
    """The file name is percent-encoded in URLs and absent from the repository path."""
    p = SlotPath.parse("node_1", "persistent", "20140811", "16.1", RES, "a b\\ü?#%.JPG")
    assert p.repo_path == f"files/persistent/20140811/16.1/{RES}"
    assert p.url_path.endswith("/a%20b%5C%C3%BC%3F%23%25.JPG")
    assert "/" not in p.url_path.rsplit("/", 1)[1]
    assert file_type(p.filename) == "jpg"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x.tar.gz", "gz"),
        ("noext", ""),
        (".bashrc", ""),
        ("a.", ""),
        ("a.VeryLongExtension", "verylongex"),
    ],
)
def test_file_type(name: str, expected: str) -> None:
    """FILE_TYPE is the lowercased extension cut to 10 characters."""
    assert file_type(name) == expected


def test_long_and_unicode_names() -> None:
    """300+ character and unicode names are accepted; over 1000 is refused."""
    assert check_filename("é" * 300) == "é" * 300
    with pytest.raises(InvalidRequest):
        check_filename("x" * 1001)


def test_rollover_after_threshold() -> None:
    """After N files in one hour of one chat type, new files go to HH.1, HH.2, ..."""
    alloc = DirectoryAllocator(per_dir=3)
    at = datetime(2014, 8, 11, 16, 5, tzinfo=UTC)
    hours = [alloc.allocate("groupchat", at)[1] for _ in range(7)]
    assert hours == ["16", "16", "16", "16.1", "16.1", "16.1", "16.2"]
    assert alloc.allocate("im", at) == ("20140811", "16")  # counted per chat type
    assert alloc.allocate("groupchat", at.replace(hour=17)) == ("20140811", "17")


def test_rollover_default_and_seed() -> None:
    """The default threshold is 1,000 (seed: the 1001st file goes to HH.1); seeds resume."""
    alloc = DirectoryAllocator()
    at = datetime(2014, 8, 11, 16, 0, tzinfo=UTC)
    hours = [alloc.allocate("groupchat", at)[1] for _ in range(1001)]
    assert hours[999] == "16" and hours[1000] == "16.1"
    resumed = DirectoryAllocator()
    resumed.seed({("im", "20140811", "16"): 1000})
    assert resumed.allocate("im", at) == ("20140811", "16.1")


def test_quote_filename_is_quote() -> None:
    """quote_filename gives quote(name, safe="") for every ASCII character and beyond."""
    from urllib.parse import quote

    from component.layout import quote_filename

    names = [f"a{chr(c)}b" for c in range(128)] + ["photo.JPG", "~x_y-z.1", "ü", "a b", ""]
    for name in names:
        assert quote_filename(name) == quote(name, safe=""), name
