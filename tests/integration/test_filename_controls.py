"""Hostile file names through real Prosody are refused at slot time; ``mft log`` as a
process shows controls already in AFT_LOG escaped, never raw."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from component.audit import open_audit_log
from component.config import load_config
from tests.fixtures.prosody import ClientFactory, ComponentFactory
from tests.fixtures.slots import ask_slot, error_of, slot_urls
from tests.unit.test_spool import rec

from .test_log_command import mft_log, toml_config

pytestmark = pytest.mark.integration

# XML 1.0 carries C1 and bidi characters but no C0 control other than tab and newline,
# which the attribute the file name travels in turns into spaces: C0 is a unit test.
HOSTILE = {
    "NEL": ("a\x85b.txt", "control characters"),
    "CSI": ("a\x9b31mred.txt", "control characters"),
    "DEL": ("a\x7fb.txt", "control characters"),
    "RLO": ("invoice\u202efdp.exe", "bidirectional"),
    "LRI": ("x\u2066y.txt", "bidirectional"),
    "PDI": ("x\u2069.txt", "bidirectional"),
}


async def test_hostile_names_refused_at_slot_time(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """NEL, CSI, DEL, RLO, LRI, PDI: bad-request with a text saying why."""
    rc = await component_factory()
    client = await xmpp_client()
    for label, (name, why) in HOSTILE.items():
        reply = await ask_slot(client, name, 3)
        assert error_of(reply) == ("bad-request", "modify"), label
        assert why in reply["error"]["text"], (label, reply["error"]["text"])
    assert rc.metrics.value("slots_refused", {"reason": "invalid_request"}) == len(HOSTILE)
    # Right-to-left names without overrides still get slots.
    slot_urls(await ask_slot(client, "שלום.txt", 3))


async def test_mft_log_escapes_controls_in_existing_rows(tmp_path: Path) -> None:
    """Rows from before the check (CSI, NEL, RLO, ESC) come out of the table and JSON escaped."""
    cfg = toml_config(tmp_path / "mft.toml", f"sqlite:///{tmp_path}/aft_log.sqlite3")
    audit = open_audit_log(load_config(cfg), spool=False)
    await audit.open()
    evil = "a\x9b31mred\x85b\u202efdp.exe\x1b]0;owned\x07"
    await audit.record(replace(rec(1), real_filename=evil, to_jid="x\x9b2J@example.test"))
    await audit.close()

    code, out, err = await mft_log(cfg)
    assert code == 0, err
    assert all(ch not in out for ch in "\x9b\x85\u202e\x1b\x07")
    assert "a\\x9b31mred\\x85b\\u202efdp.exe\\x1b]0;owned\\x07" in out
    assert len(out.splitlines()) == 3  # header, the row, "(1 row)"

    code, out, err = await mft_log(cfg, "--format", "json")
    assert code == 0, err
    assert all(ch not in out for ch in "\x9b\x85\u202e\x1b\x07")
    assert json.loads(out)[0]["REAL_FILENAME"] == evil
