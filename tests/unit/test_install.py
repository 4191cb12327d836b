"""The install: what each make command installs, the pinned versions, what the README says."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Servers the sandbox does not run: installing them starts their system services.
NOT_FOR_THE_SANDBOX = {
    "mariadb-server", "ejabberd", "nginx-light", "nginx", "openssh-server", "postgresql",
    "clamav-daemon", "systemd",
}  # fmt: skip
REFRESH = "make constraints"


def make_variable(name: str) -> list[str]:
    """The words of ``NAME := ...`` in the Makefile (continuation lines joined)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:=(.*)$", text, re.MULTILINE)
    assert match, name
    return match.group(1).split()


def readme_packages(command: str) -> list[str]:
    """The packages the README's table gives for ``command`` (``make sandbox``, ...)."""
    text = (ROOT / "README.rst").read_text()
    table = text[text.index("command            Debian packages") :].split("\n\n")[0]
    rows: dict[str, list[str]] = {}
    current = ""
    for line in table.splitlines()[2:]:
        if line.startswith("="):
            continue
        if line.startswith("``"):
            current = line.split("``")[1]
        rows.setdefault(current, []).extend(line[19:].replace(",", " ").split())
    prose = {"the", "plus"}  # "the sandbox's, plus ..."
    return [w for w in rows[command] if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w) and w not in prose]


def pins() -> dict[str, str]:
    """``constraints.txt`` as normalised name -> version."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[_norm(name)] = version
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.strip())
    assert match, spec
    return _norm(match.group(0))


def test_the_sandbox_installs_no_server_it_does_not_run() -> None:
    """SANDBOX_PACKAGES: Prosody and what the service needs, none of the test servers."""
    sandbox = set(make_variable("SANDBOX_PACKAGES"))
    assert {"prosody", "python3-venv", "go-sendxmpp", "openssl"} <= sandbox
    assert sandbox & NOT_FOR_THE_SANDBOX == set()
    assert NOT_FOR_THE_SANDBOX - {"nginx"} <= set(make_variable("TEST_PACKAGES"))


def test_make_targets_install_their_own_lists() -> None:
    """`make sandbox` installs SANDBOX_PACKAGES only; `make test` both lists."""
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^sandbox: sandbox-packages venv$", text, re.MULTILINE)
    assert re.search(r"^test: test-packages venv$", text, re.MULTILINE)
    assert 'PACKAGES="$(SANDBOX_PACKAGES)"' in text
    assert 'PACKAGES="$(SANDBOX_PACKAGES) $(TEST_PACKAGES)"' in text


def test_readme_names_the_packages_of_each_command() -> None:
    """The README's table lists exactly the Makefile's packages for each command."""
    sandbox = make_variable("SANDBOX_PACKAGES")
    assert readme_packages("make sandbox") == sandbox
    assert set(readme_packages("make test")) == set(make_variable("TEST_PACKAGES"))


def test_constraints_pin_every_declared_requirement() -> None:
    """Every requirement in setup.cfg and pyproject.toml, and pip, has an exact pin."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    declared = cfg["options"]["install_requires"].splitlines()
    declared += cfg["options.extras_require"]["test"].splitlines()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    names = {_requirement_name(s) for s in [*declared, *build, "pip"] if s.strip()}
    names -= {""}
    have = pins()
    missing = sorted(n for n in names if n not in have)
    assert missing == [], f"not in constraints.txt: {missing}; run `{REFRESH}`"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in have.values())


def test_the_venv_is_installed_with_the_constraints() -> None:
    """The Makefile's venv uses constraints.txt for the packages and the build, and
    refreshes itself when the file changes; the README gives the refresh command."""
    text = (ROOT / "Makefile").read_text()
    recipe = text[text.index("$(VENV)/.installed:") :].split("\n\n")[0]
    assert "$(CONSTRAINTS)" in recipe.splitlines()[0]
    assert "-c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) -e '.[test]'" in recipe
    assert f"{REFRESH} && make test" in (ROOT / "README.rst").read_text()


def test_readme_opening_names_the_cisco_guide_not_a_path() -> None:
    """The first paragraph names Cisco's guide and no path outside the repository."""
    text = (ROOT / "README.rst").read_text()
    first = text.split("\n\n")[1]
    assert '"Configure Managed File Transfer"' in first
    assert "../" not in first
