"""The APK gets what the SDK needs on Android: its dependencies and the Java helper (M1).

buildozer cannot run here (it downloads the Android SDK and NDK), so these tests read what
it would read: demo_app/buildozer.spec, against client_sdk/pyproject.toml and the installed
distributions' own metadata for what they require in turn.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "demo_app" / "buildozer.spec"
SDK_PYPROJECT = ROOT / "client_sdk" / "pyproject.toml"
ANDROID_PY = ROOT / "client_sdk" / "latchkey_client" / "storage" / "android.py"


def _spec() -> configparser.ConfigParser:
    spec = configparser.ConfigParser(interpolation=None)
    spec.read(SPEC)
    return spec


def _spec_requirements() -> set[str]:
    raw = _spec()["app"]["requirements"]
    return {canonicalize_name(re.split(r"[=<>!~ ]", item.strip())[0])
            for item in raw.split(",") if item.strip()}


def _sdk_requirements() -> list[Requirement]:
    project = tomllib.loads(SDK_PYPROJECT.read_text())["project"]
    return [Requirement(r) for r in
            (*project["dependencies"], *project["optional-dependencies"]["android"])]


def _closure(roots: list[Requirement]) -> set[str]:
    """Return every distribution ``roots`` need at run time, following installed metadata."""
    env = {**default_environment(), "extra": ""}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # pyjnius on a desktop without it: p4a's recipe provides it on a phone
        todo.extend(Requirement(r) for r in requires)
    return seen


def test_spec_lists_every_dependency_the_sdk_declares() -> None:
    declared = {canonicalize_name(r.name) for r in _sdk_requirements()}
    assert declared == {"httpx", "pyjnius"}, "update this test and buildozer.spec together"
    assert declared <= _spec_requirements()


def test_spec_lists_everything_the_sdk_dependencies_require_in_turn() -> None:
    missing = _closure(_sdk_requirements()) - _spec_requirements()
    assert not missing, f"add to buildozer.spec requirements: {sorted(missing)}"


def test_spec_keeps_every_option_where_buildozer_reads_it() -> None:
    # buildozer reads [app] (plus [app:list] / [app@profile] forms) and [buildozer]; options
    # under any other section, e.g. [android], are silently ignored.
    stray = [s for s in _spec().sections()
             if s not in ("app", "buildozer") and not s.startswith(("app:", "app@"))]
    assert not stray
    for option in ("android.permissions", "android.allow_backup", "android.res_xml",
                   "android.add_src"):
        assert option in _spec()["app"], option


def test_spec_ships_the_java_helper_the_android_storage_calls() -> None:
    add_src = _spec()["app"].get("android.add_src")
    assert add_src, "buildozer.spec must set android.add_src"
    # buildozer copies the named directory, by its last component, into the Java source
    # root (targets/android.py `_add_java_src`): it must be the package's top directory.
    named_dir = SPEC.parent / add_src.strip()
    assert named_dir.name == "org"
    src = named_dir.parent
    # Every org.latchkey class android.py names is a source file in that directory.
    named = set(re.findall(r'"(org\.latchkey\.\w+)', ANDROID_PY.read_text()))
    assert named == {"org.latchkey.KeystoreBox", "org.latchkey.AndroidKeys"}
    for qualified in named:
        path = src / (qualified.replace(".", "/") + ".java")
        text = path.read_text()
        assert "package org.latchkey;" in text
        assert re.search(rf"public final class {qualified.rsplit('.', 1)[1]}\b", text)
    # ... and the Python sources exclude it (it is compiled by gradle, not shipped as data).
    assert "android" in [d.strip() for d in _spec()["app"]["source.exclude_dirs"].split(",")]
