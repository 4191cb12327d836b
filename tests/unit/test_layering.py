"""The shape of the house: the one-way import rule, no import cycles, small rooms.

``component`` never imports ``httpd`` (DESIGN.md, STYLE.md): not by an import statement
at any depth, not by a module name in a string. The one sanctioned way from the CLI to
the HTTP side is the ``xmpp_mft.commands`` entry-point table in ``setup.cfg``.
"""

from __future__ import annotations

import ast
import configparser
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from component import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("component", "httpd")
MAX_MODULES_PER_PACKAGE = 12
MAX_LINES_PER_MODULE = 500
# A string that names a module of httpd ("httpd.ops.runner", "httpd.ops.runner:run_command").
HTTPD_MODULE_STRING = re.compile(r"^httpd(\.[A-Za-z_]\w*)+(:\w+)?$")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


MODULES = dict(_modules())


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module of the tree that ``name`` imports, at any depth of the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def test_component_never_imports_httpd() -> None:
    """No module of ``component``, at any depth, imports ``httpd`` or loads it by name."""
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("component"):
            continue
        offenders += [f"{name} imports {m}" for m in _imports(name, path) if m.startswith("httpd")]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if HTTPD_MODULE_STRING.match(node.value):
                    offenders.append(f"{name} names {node.value!r}")
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("import_module", "__import__"):
                    offenders.append(f"{name} calls {called}()")
    assert offenders == []


def test_the_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    """The string pattern flags module names and spares the ``--only httpd`` choice."""
    assert HTTPD_MODULE_STRING.match("httpd.ops.runner:run_command")
    assert HTTPD_MODULE_STRING.match("httpd.repository")
    assert not HTTPD_MODULE_STRING.match("httpd")


def test_no_import_cycles() -> None:
    """The module graph of component and httpd (function-level imports too) has no cycle."""
    graph = {n: {m for m in _imports(n, p) if m in MODULES and m != n} for n, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_httpd_uses_the_xmpp_service_only_in_composition_roots() -> None:
    """Only ``mft run`` and ``mft sandbox`` wire the XMPP side into the HTTP side."""
    # The worker process's entry point is a root too: it sets up logging as `mft` does.
    roots = {"httpd.ops.runner", "httpd.ops.sandbox", "httpd.ops.worker"}
    bad = [
        f"{name} imports {m}"
        for name, path in MODULES.items()
        if name.startswith("httpd") and name not in roots
        for m in _imports(name, path)
        if m.startswith(("component.xmpp.service", "component.servers", "component.cli"))
    ]
    assert bad == []


def test_rooms_stay_small() -> None:
    """No package holds more than 12 modules and no module passes 500 lines."""
    per_package: dict[Path, int] = {}
    too_long = []
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            per_package[path.parent] = per_package.get(path.parent, 0) + 1
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES_PER_MODULE:
            too_long.append(f"{name}: {lines} lines")
    drawers = [f"{p.relative_to(ROOT)}: {n}" for p, n in per_package.items() if n > 12]
    assert (drawers, too_long) == ([], [])


def _declared_commands() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    table = parser["options.entry_points"][cli.REGISTRY]
    pairs = (line.split("=", 1) for line in table.strip().splitlines())
    return {k.strip(): v.strip() for k, v in pairs}


def _parser_commands() -> set[str]:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return set(sub.choices or ())


def test_registry_declares_every_command_and_the_install_matches() -> None:
    """Each ``mft`` subcommand has one registry entry; the installed table is setup.cfg's."""
    declared = _declared_commands()
    assert set(declared) == _parser_commands()
    assert cli.registered_commands() == declared


@pytest.mark.parametrize("command", sorted(_declared_commands()))
def test_every_registered_command_loads(command: str) -> None:
    """Each registry entry loads to an ``async def f(cfg, args) -> int``."""
    fn = cli.resolve(command)
    assert inspect.iscoroutinefunction(fn)
    assert list(inspect.signature(fn).parameters)[:2] == ["cfg", "args"]
