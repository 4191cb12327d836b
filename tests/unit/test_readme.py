"""README.rst stays in step with the configuration and the test command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from component.config import _SECTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_config_key() -> None:
    """The README's configuration table names every key of every section."""
    text = (ROOT / "README.rst").read_text()
    table = text[text.index("section             keys") :]
    table = table[: table.index("\nOperations\n")]
    missing = []
    for section, cls in _SECTIONS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"``[{section}]``"))
        start = table.index(row)
        block = table[start : start + 400].split("\n``[")[0]
        missing += [
            f"[{section}] {f.name}" for f in dataclasses.fields(cls) if f"``{f.name}``" not in block
        ]
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs ``make test``, the command the README gives."""
    assert "``make test``" in (ROOT / "README.rst").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
