"""Run inside a fresh venv that has only the two wheels: report what got installed, or sign in.

``test_wheels.py`` starts this with that venv's interpreter in isolated mode (``-I``: no
repository, no ``PYTHONPATH``, no user site on ``sys.path``), so everything it imports is
what the wheels installed. It prints one JSON document on stdout and never a token.

    python -I wheel_driver.py inspect
    python -I wheel_driver.py login BASE_URL
    python -I wheel_driver.py flow BASE_URL
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import json
import pkgutil
import re
import sys
import uuid
from pathlib import Path
from typing import Any

PASSWORD = "correct horse battery staple"
DISTRIBUTIONS = {"latchkey-resource": "latchkey_resource", "latchkey-server": "latchkey_server",
                 "latchkey-client": "latchkey_client"}


def _inside_this_venv(path: str | None) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(Path(sys.prefix).resolve())


def _extra_modules(dist_name: str) -> set[str]:
    """Return the top-level modules of what a distribution's extras require (``flask`` for
    ``flask>=3.0; extra == "flask"``): a module of an extra needs it installed."""
    names = set()
    for requirement in importlib.metadata.requires(dist_name) or []:
        if "extra ==" in requirement:
            name = re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0]
            names.add(name.lower().replace("-", "_"))
    return names


def _import_every_module(package_name: str, dist_name: str,
                         ) -> tuple[list[str], dict[str, str], list[str]]:
    """Import the package and every module under it; a forgotten subpackage fails here.

    A module that fails only for want of an extra's requirement (the resource package's
    framework adapters without the framework) is listed apart: that is what a user who
    did not ask for the extra gets, and the message names the missing module.
    """
    package = importlib.import_module(package_name)
    imported, failed, needs_extra = [package_name], {}, []
    optional = _extra_modules(dist_name)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in optional:
                needs_extra.append(info.name)
            else:
                failed[info.name] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # reported to the test, which fails on it
            failed[info.name] = f"{type(exc).__name__}: {exc}"
        else:
            imported.append(info.name)
    return imported, failed, needs_extra


def inspect() -> dict[str, Any]:
    """Describe both installed distributions: where they live, their files and metadata."""
    report: dict[str, Any] = {"python": "{}.{}".format(*sys.version_info[:2]), "prefix": sys.prefix}
    for dist_name, package_name in DISTRIBUTIONS.items():
        imported, failed, needs_extra = _import_every_module(package_name, dist_name)
        package = importlib.import_module(package_name)
        files = importlib.resources.files(package_name)
        metadata = importlib.metadata.metadata(dist_name)
        dist = importlib.metadata.distribution(dist_name)
        report[dist_name] = {
            "version": importlib.metadata.version(dist_name),
            "module_version": getattr(package, "__version__", None),
            "inside_venv": _inside_this_venv(package.__file__),
            # PEP 610: an editable or directory install records a direct_url.json saying so.
            "editable": '"editable": true' in (dist.read_text("direct_url.json") or ""),
            "imported": imported,
            "import_failures": failed,
            "needs_extra": needs_extra,
            "py_typed": files.joinpath("py.typed").is_file(),
            "lua": sorted(p.name for p in files.joinpath("lua").iterdir())
            if files.joinpath("lua").is_dir() else [],
            "password_list_lines": len(
                files.joinpath("data", "common-passwords.txt").read_text().splitlines())
            if files.joinpath("data", "common-passwords.txt").is_file() else 0,
            "requires_python": metadata["Requires-Python"],
            "classifiers": metadata.get_all("Classifier") or [],
            "extras": metadata.get_all("Provides-Extra") or [],
        }
    return report


def login(base_url: str) -> dict[str, Any]:
    """Register and sign in with the installed SDK, then call ``/v1/me``."""
    from latchkey_client import LatchkeyClient

    username = f"wheel-{uuid.uuid4().hex[:12]}"
    with LatchkeyClient(base_url=base_url) as client:
        client.register(username=username, password=PASSWORD)
        session = client.login(username=username, password=PASSWORD)
        me = client.get("/v1/me")
        return {"auth_level": session.auth_level, "me_status": me.status_code,
                "me_username": me.json().get("username") == username,
                "sdk_file_inside_venv": _inside_this_venv(sys.modules["latchkey_client"].__file__)}


def flow(base_url: str) -> dict[str, Any]:
    """Register -> login -> /v1/me -> refresh -> logout, and show the logout reached the server.

    The refresh goes through the public API: a second client sharing the first one's
    storage resumes the session with ``restore()``, which presents the stored refresh token.
    """
    from latchkey_client import LatchkeyClient, MemoryStorage, SessionEndedError

    username = f"wheel-{uuid.uuid4().hex[:12]}"
    storage = MemoryStorage()
    steps: dict[str, Any] = {}
    with LatchkeyClient(base_url=base_url, storage=storage, stay_signed_in=True) as first:
        steps["register"] = bool(first.register(username=username, password=PASSWORD))
        steps["login"] = first.login(username=username, password=PASSWORD).auth_level
        steps["me"] = first.get("/v1/me").status_code
        with LatchkeyClient(base_url=base_url, storage=storage, stay_signed_in=True) as second:
            events: list[str] = []
            second.on("refreshed", lambda event: events.append(event.name.value))
            resumed = second.restore()
            steps["refresh"] = events
            steps["same_session"] = (resumed is not None and first.session is not None
                                     and resumed.session_id == first.session.session_id)
            steps["me_after_refresh"] = second.get("/v1/me").status_code
            result = second.logout()
            steps["logout_confirmed"] = result.server_confirmed
        try:
            first.get("/v1/me")
        except SessionEndedError as exc:
            steps["old_access_token_after_logout"] = type(exc).__name__
        else:
            steps["old_access_token_after_logout"] = "accepted"
    return steps


def main(argv: list[str]) -> int:
    """Run one command and print its JSON report."""
    command, *rest = argv
    report = {"inspect": inspect, "login": login, "flow": flow}[command](*rest)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
