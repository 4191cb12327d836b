"""The import rule: ``component`` never imports ``httpd`` (DESIGN.md, STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

COMPONENT = Path(__file__).resolve().parents[2] / "component"


def test_component_never_imports_httpd() -> None:
    """No module of ``component`` has an import statement naming ``httpd``."""
    offenders = []
    for path in sorted(COMPONENT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "httpd"]
    assert offenders == []


def test_httpd_uses_the_xmpp_service_only_in_composition_roots() -> None:
    """Only ``mft run`` and ``mft sandbox`` wire the XMPP service into the HTTP side."""
    xmpp_side = {"service", "prosody", "cli"}
    roots = {"runner.py", "sandbox.py"}
    bad = []
    for path in sorted((COMPONENT.parent / "httpd").glob("*.py")):
        if path.name in roots:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("component."):
                if (node.module or "").split(".")[1] in xmpp_side:
                    bad.append(f"{path.name}: {node.module}")
    assert bad == []
