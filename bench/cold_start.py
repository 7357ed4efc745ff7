"""Measure cold start to ready with the embedded store: spawn → ``/readyz`` answers 200.

Two figures: the very first start (generates keys, creates the AOF) and a restart on the
same instance directory (loads keys and the AOF), medians of N runs each, with the
default gunicorn settings ``make run`` uses.

Run: ``.venv/bin/python -m bench.cold_start [--repetitions 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import print_json, start_server
from tests.conftest import wait_until_ready


def _time_start(instance: Path) -> float:
    started = time.perf_counter()
    server = start_server(instance, {"LATCHKEY_WORKERS": "2"}, redis_url=None,
                          wait_ready=False)
    try:
        wait_until_ready(server)
        return time.perf_counter() - started
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    first, restart = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repetitions):
            instance = Path(tmp) / f"i{i}"
            first.append(_time_start(instance))
            restart.append(_time_start(instance))
    print_json({
        "first_start_to_ready_seconds": round(statistics.median(first), 3),
        "restart_to_ready_seconds": round(statistics.median(restart), 3),
        "repetitions": args.repetitions,
    })


if __name__ == "__main__":
    main()
