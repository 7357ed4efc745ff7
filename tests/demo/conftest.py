"""Fixtures that run the real demo app, headless, against a real server and Redis.

Each scenario runs the app in its own process (``driver.py``): Kivy's window and event
loop live once per process, so a fresh process per scenario keeps tests independent and a
hang killable. The window is SDL's ``offscreen`` driver with Mesa's software GL, so no
display is needed (set ``LATCHKEY_TEST_XVFB=1`` to run under an Xvfb server instead).

Every run is checked for leaks on the way out: the driver records every token and session
id the app was issued, and :func:`run_demo` asserts that none of them, and nothing
token-shaped, appears in the app's DEBUG log or its console output (D1, S1).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import stop_process

# Look for Kivy without importing it: importing Kivy here would start its logging and
# write under ~/.kivy before the driver's KIVY_HOME is set. A missing Kivy is a broken
# install (requirements-test.txt), so it fails rather than skips.
if importlib.util.find_spec("kivy") is None:
    raise RuntimeError("the demo tests need kivy: pip install -r requirements-test.txt")

DRIVER = Path(__file__).with_name("driver.py")
RUN_TIMEOUT_SECONDS = 90
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")
_REFRESH = re.compile(r"lkr_[A-Za-z0-9_-]{16,}")


@dataclass
class DemoRun:
    """What one scripted run of the app left behind."""

    returncode: int
    output: str
    log: str
    observed: dict[str, Any]
    #: Every token and session id the run was issued: never in a repr or a failure message.
    secrets: list[str] = field(repr=False)

    def explain(self) -> str:
        """Return the driver's output and the tail of the app log, for failure messages."""
        return f"--- driver output ---\n{self.output[-6000:]}\n--- app log ---\n{self.log[-6000:]}"


def assert_no_secrets(run: DemoRun) -> None:
    """Fail if a token, a session id or anything token-shaped reached the logs or console."""
    for text, where in ((run.log, "the app log"), (run.output, "the console")):
        for secret in run.secrets:
            assert secret not in text, f"a token or session id appeared in {where}"
        assert not _JWT.search(text), f"a JWT-shaped string appeared in {where}"
        assert not _REFRESH.search(text), f"a refresh-token-shaped string appeared in {where}"


@contextlib.contextmanager
def _xvfb() -> Iterator[str]:
    """Start an Xvfb server on a free display number; yield the DISPLAY value."""
    for number in range(90, 140):
        if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
            continue
        proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x1024x24",
                                 "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        if proc.poll() is None:
            try:
                yield f":{number}"
            finally:
                stop_process(proc, timeout_seconds=10)
            return
    raise RuntimeError("no free X display for Xvfb")


@pytest.fixture(scope="session")
def display_env() -> Iterator[dict[str, str]]:
    """Window settings for the app: SDL offscreen by default, Xvfb on request."""
    if os.environ.get("LATCHKEY_TEST_XVFB") == "1" and shutil.which("Xvfb"):
        with _xvfb() as display:
            yield {"DISPLAY": display, "SDL_VIDEODRIVER": "x11"}
    else:
        yield {"SDL_VIDEODRIVER": "offscreen"}


@pytest.fixture
def run_demo(tmp_path: Path, display_env: dict[str, str]) -> Callable[..., DemoRun]:
    """Return ``run(scenario, server_url, **params)``: run one scripted app session.

    The run must succeed (exit 0) and leak nothing; its observations are returned.
    Pass ``expect_failure=True`` to get a failed run back instead of failing the test.
    """
    counter = [0]

    def run(scenario: str, server_url: str, *, expect_failure: bool = False,
            storage: str = "memory", home: Path | None = None, **params: Any) -> DemoRun:
        counter[0] += 1
        work = tmp_path / f"run-{counter[0]}-{scenario}"
        work.mkdir()
        home = home or tmp_path / "app-home"
        (home / "config").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LATCHKEY_", "KIVY_", "SDL_"))}
        env.update(display_env)
        env.update({
            "KIVY_HOME": str(home / "kivy"),
            "KIVY_NO_ARGS": "1",
            "KIVY_NO_CONSOLELOG": "1",
            "KIVY_NO_FILELOG": "1",
            "KIVY_LOG_MODE": "PYTHON",
            "KIVY_METRICS_DENSITY": str(params.pop("density", 1)),
            "XDG_CONFIG_HOME": str(home / "config"),
            "LATCHKEY_DEMO_SERVER": server_url,
            "LATCHKEY_DEMO_STORAGE": storage,
            "LATCHKEY_DEMO_FILE_PASSPHRASE": "demo-test-passphrase",
            "LATCHKEY_DEMO_CHECK_SECONDS": str(params.pop("check_seconds", 1)),
            "LATCHKEY_DEMO_DEVICE_NAME": params.pop("device_name", "Test phone"),
        })
        backend = params.get("backend_url")
        if backend:
            env["LATCHKEY_DEMO_BACKEND"] = backend
        warning = params.pop("idle_warning_seconds", None)
        if warning is not None:
            env["LATCHKEY_DEMO_IDLE_WARNING_SECONDS"] = str(warning)
        params["server_url"] = server_url
        spec = {"scenario": scenario, "params": params, "log_path": str(work / "app.log"),
                "result_path": str(work / "result.json")}
        env["LATCHKEY_DEMO_TEST_SPEC"] = json.dumps(spec)
        try:
            proc = subprocess.run([sys.executable, str(DRIVER)], env=env, cwd=work,
                                  capture_output=True, timeout=RUN_TIMEOUT_SECONDS)
            output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
            code = proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = ((exc.stdout or b"") + (exc.stderr or b"")).decode("utf-8", "replace")
            code = -1
        log_path, result_path = Path(spec["log_path"]), Path(spec["result_path"])
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        demo = DemoRun(code, output, log, result.get("observed", {}), result.get("secrets", []))
        assert demo.secrets or scenario in NO_SESSION_SCENARIOS, demo.explain()
        assert_no_secrets(demo)
        if not expect_failure:
            assert code == 0, demo.explain()
        return demo

    return run


#: Scenarios in which the app never holds a session, so it records no secrets.
NO_SESSION_SCENARIOS = frozenset({"unreachable_server", "expect_signin"})
