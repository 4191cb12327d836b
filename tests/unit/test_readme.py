"""README.rst stays in step with the configuration and the test command."""

from __future__ import annotations

import dataclasses
import re
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


def code_layout_map() -> dict[str, str]:
    """The README's code-layout block: package folder -> the text of its entry."""
    text = (ROOT / "README.rst").read_text()
    block = text[text.index("\nCode layout\n-----------\n") :]
    block = block[block.index("::\n\n") + 4 : block.index("\n\nThe one-way rule")]
    entries: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        head = line[4:].split(" ", 1)
        if line.startswith("    ") and not line.startswith("     ") and head[0].endswith("/"):
            current = head[0].rstrip("/")
            entries[current] = head[1] if len(head) > 1 else ""
        else:
            entries[current] += " " + line.strip()
    return entries


def test_code_layout_matches_the_tree() -> None:
    """Every package of component/ and httpd/ has an entry naming each of its modules."""
    entries = code_layout_map()
    packages = sorted(
        str(init.parent.relative_to(ROOT))
        for top in ("component", "httpd")
        for init in (ROOT / top).rglob("__init__.py")
    )
    assert sorted(entries) == packages
    missing = [
        f"{package}/{module.stem}"
        for package in packages
        for module in (ROOT / package).glob("*.py")
        if module.stem not in ("__init__", "__main__")
        and module.stem not in re.findall(r"\w+", entries[package])
    ]
    assert missing == []
