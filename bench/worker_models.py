"""Run ``latchkey-server`` under another WSGI worker model, to measure it (benchmarks only).

``latchkey-server`` serves with gunicorn's gthread workers; issue 18 asks whether sync
workers, or a compiled server (granian), would serve a protected request faster. This
runs the same command, the same settings and the same shared preparation (keys, metrics
directory, issuer) with only the worker model replaced, so ``bench.compare_peer`` can put
each beside the default in one run:

- ``sync``: gunicorn's sync worker, one request at a time per worker process (gunicorn
  turns a sync worker with threads into gthread, so threads are 1);
- ``granian``: ``LATCHKEY_SERVER=granian``, the shipped granian path
  (``latchkey_server.serving_granian``): granian's WSGI interface, the same worker count,
  ``--threads`` blocking threads per worker (granian's Rust runtime parses HTTP and holds
  the connections), the request-size guard and granian's JSON logging.

Run by ``bench/compare_peer.py --variants sync granian`` through ``wrapper_bin_dir``,
which gives ``tests.conftest.start_server`` a ``latchkey-server`` that is this module.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

WORKER_MODEL_ENV = "BENCH_WORKER_MODEL"
WORKER_MODELS = ("sync", "granian")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def wrapper_bin_dir(directory: Path, model: str) -> Path:
    """Return a directory whose ``latchkey-server`` runs this module with ``model``."""
    if model not in WORKER_MODELS:
        raise ValueError(f"unknown worker model {model!r}")
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "latchkey-server"
    script.write_text(f"#!/bin/sh\nexport {WORKER_MODEL_ENV}={model}\n"
                      f"export PYTHONPATH={_REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}\n"
                      f'exec {sys.executable} -m bench.worker_models "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


def main() -> int:
    """``latchkey-server`` with the worker model named in ``BENCH_WORKER_MODEL``."""
    from latchkey_server import cli, serving

    model = os.environ[WORKER_MODEL_ENV]
    if model == "sync":
        original = serving.gunicorn_options

        def sync_options(*args: Any, **kwargs: Any) -> dict[str, Any]:
            options = original(*args, **kwargs)
            options.update(worker_class="sync", threads=1)
            return options

        serving.gunicorn_options = sync_options  # type: ignore[assignment]
    else:  # the shipped granian path (serving_granian.py), chosen by its setting
        os.environ["LATCHKEY_SERVER"] = "granian"
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
