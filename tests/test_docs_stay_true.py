"""Keep the docs honest: the security map and the configuration table match the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from latchkey_server.config import SETTINGS, SettingSpec

ROOT = Path(__file__).resolve().parent.parent
SHARED_REQUIREMENTS = ROOT.parent / "shared" / "REQUIREMENTS.md"
REQUIREMENT_IDS = {*(f"T{i}" for i in range(1, 6)), "X1", "X2", "X3",
                   *(f"L{i}" for i in range(1, 7)), *(f"D{i}" for i in range(1, 6)),
                   "S1", "S2", "S3"}


def _security_rows() -> list[str]:
    return [line for line in (ROOT / "docs" / "SECURITY.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| req")]


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def test_every_requirement_has_a_row_in_the_security_map():
    if SHARED_REQUIREMENTS.exists():
        listed = set(re.findall(r"\*\*([TXLDS]\d)\*\*", SHARED_REQUIREMENTS.read_text()))
        assert listed == REQUIREMENT_IDS
    mapped = {m.group(1) for row in _security_rows()
              if (m := re.match(r"\| ([TXLDS]\d)\b", row))}
    assert REQUIREMENT_IDS <= mapped, sorted(REQUIREMENT_IDS - mapped)


def test_every_test_the_security_map_cites_exists():
    missing = []
    for row in _security_rows():
        current: Path | None = None
        for ref in re.findall(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`", row):
            file_part, _, name = ref.partition("::")
            if file_part:
                current = ROOT / file_part
                if not current.exists():
                    missing.append(file_part)
                    continue
            if name and current is not None and current.exists():
                if name.startswith("test_") and name not in _defined_tests(current):
                    missing.append(f"{current.relative_to(ROOT)}::{name}")
    assert not missing, missing


def documented_row(spec: SettingSpec) -> str:
    """Return the row docs/CONFIGURATION.md must hold for one declared setting."""
    return (f"| `{spec.env}` | {spec.shown_default} | {spec.unit or '—'} | "
            f"{spec.doc} |")


def _configuration_rows() -> dict[str, str]:
    """Return the settings table of docs/CONFIGURATION.md, keyed by variable."""
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    table = text.split("## Settings", 1)[1]
    return {m.group(1): line for line in table.splitlines()
            if (m := re.match(r"\| `([A-Z0-9_]+)` \|", line))}


def test_every_setting_is_documented_with_its_name_default_and_unit():
    rows = _configuration_rows()
    missing = [s.env for s in SETTINGS if s.env not in rows]
    assert not missing, f"settings missing from docs/CONFIGURATION.md: {missing}"
    wrong = {s.env: documented_row(s) for s in SETTINGS if rows[s.env] != documented_row(s)}
    assert not wrong, f"rows that disagree with config.py (expected shown): {wrong}"


def test_the_configuration_doc_names_no_variable_that_does_not_exist():
    declared = {s.env for s in SETTINGS}
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    # A variable is named with its prefix, or as an upper-case name with an underscore
    # (a bare `HSTS` could be the header's name, `INFO` a log level's).
    named = {name.removeprefix("LATCHKEY_") for name in re.findall(
        r"`(LATCHKEY_[A-Z0-9_]+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)", text)}
    assert set(_configuration_rows()) <= declared
    assert named <= declared, sorted(named - declared)
