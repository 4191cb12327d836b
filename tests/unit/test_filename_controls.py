"""File names: C0 and C1 controls and the bidi overrides and isolates are refused at slot
time; ``mft log``'s table and JSON escape what is non-printable in existing rows."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest

from component.audit.query import render_json, render_table
from component.errors import InvalidRequest
from component.layout import check_filename
from component.xmpp.policy import check_slot_request
from tests.fixtures.config import ConfigFactory
from tests.unit.test_spool import rec

C0 = [chr(c) for c in range(0x00, 0x20)]
C1 = [chr(c) for c in range(0x7F, 0xA0)]  # DEL and C1: NEL U+0085, CSI U+009B, ...
BIDI = [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]


@pytest.mark.parametrize("ch", C0 + C1, ids=lambda c: f"U+{ord(c):04X}")
def test_control_characters_refused(ch: str) -> None:
    """Every C0 and C1 control (and DEL), anywhere in the name, is bad-request."""
    for name in (f"a{ch}b.txt", f"{ch}x", f"x{ch}"):
        with pytest.raises(InvalidRequest, match="control characters"):
            check_filename(name)


@pytest.mark.parametrize("ch", BIDI, ids=lambda c: f"U+{ord(c):04X}")
def test_bidi_overrides_and_isolates_refused(ch: str) -> None:
    """LRE RLE PDF LRO RLO and LRI RLI FSI PDI disguise extensions: bad-request."""
    with pytest.raises(InvalidRequest, match="bidirectional"):
        check_filename(f"invoice{ch}fdp.exe")


@pytest.mark.parametrize(
    "name",
    [
        "a\u00a0b.txt",  # NBSP: first code point after C1
        "\u00a1hola!.txt",
        "marks\u200e\u200f.txt",  # LRM/RLM marks are not overrides
        "x\u2029y\u202fz.txt",  # neighbours of the refused ranges
        "x\u2065\u206a.txt",
        "שלום.txt",
        "مرحبا.pdf",
    ],
)
def test_neighbours_and_rtl_scripts_allowed(name: str) -> None:
    """Right-to-left scripts and the code points next to the refused ranges still pass."""
    assert check_filename(name) == name


@pytest.mark.parametrize("name", ["a\x85b.txt", "a\x9b31mred.txt", "invoice\u202efdp.exe"])
def test_slot_request_refuses_with_a_clear_text(config_factory: ConfigFactory, name: str) -> None:
    """The slot policy answers bad-request naming what is wrong."""
    with pytest.raises(InvalidRequest) as info:
        check_slot_request(config_factory(), "alice@localhost", name, "3")
    assert info.value.text.startswith("Invalid filename:")
    assert "control" in info.value.text or "bidirectional" in info.value.text


EVIL = "a\x85b\x9b31mred\u202efdp.exe\x1b[2J\u2066"


def test_table_escapes_c1_and_bidi_in_existing_rows() -> None:
    """Rows written before the check: NEL, CSI, RLO, ESC, LRI shown escaped, never raw."""
    out = io.StringIO()
    render_table([replace(rec(1), real_filename=EVIL, jid="m\x9b@example.test")], out)
    text = out.getvalue()
    assert all(ch not in text for ch in "\x85\x9b\u202e\x1b\u2066")
    assert "a\\x85b\\x9b31mred\\u202efdp.exe\\x1b[2J\\u2066" in text
    assert "m\\x9b@example.test" in text
    assert len(text.splitlines()) == 3  # header, one row, count: NEL forged no line


def test_json_escapes_non_printables_and_round_trips() -> None:
    """JSON output carries no raw control or bidi character, and decodes to the stored name."""
    out = io.StringIO()
    render_json([replace(rec(1), real_filename=EVIL + "\U000e0001")], out)
    text = out.getvalue()
    assert all(ch not in text for ch in "\x85\x9b\u202e\x1b\u2066\U000e0001")
    assert json.loads(text)[0]["REAL_FILENAME"] == EVIL + "\U000e0001"


def test_quick_check_agrees_with_the_detailed_one() -> None:
    """For every BMP character in a name, check_filename says what its detailed checks say."""
    from component import layout

    def detailed(name: str) -> bool:
        return not ("/" in name or layout._CONTROL_RE.search(name) or layout._BIDI_RE.search(name))

    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        name = f"a{chr(code)}b"
        try:
            check_filename(name)
            ok = True
        except InvalidRequest:
            ok = False
        assert ok == detailed(name), hex(code)
