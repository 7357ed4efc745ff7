"""Profile ``latchkey-server`` under wrk load: py-spy on its workers, Redis's own view.

``bench.profile_hot_path`` profiles in one process through Flask's test client; this one
profiles the real thing: ``latchkey-server --host --port`` with its defaults (gunicorn
gthread, 2 workers by 8 threads, log level INFO) against the stock redis-server 7 on TCP
loopback with its defaults, driven by ``wrk -t1 -c16`` on ``/v1/me``. While wrk runs,
py-spy samples every worker (``--subprocesses``, ``--nonblocking`` so the workers are not
paused), and Redis records SLOWLOG (every command), ``INFO commandstats`` and LATENCY
(events over 1 ms). Reported: the frames with the largest share of worker samples, both
inclusive (the frame is on the stack) and self (the frame is running), and Redis's time.
By default py-spy samples every thread it does not judge idle, so a thread blocked in a
Redis reply counts (wall time); ``--gil`` samples only the thread holding the GIL, which
is where a worker's Python CPU goes.

Run: ``.venv/bin/python -m bench.profile_under_load [--seconds 20] [--top 30]``
(needs ``py-spy`` from ``requirements-bench.txt``, ``wrk``, and ptrace rights over the
workers, which the user who started them has unless ``kernel.yama.ptrace_scope`` > 1).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import BENCH_USER_AGENT, login_tokens, print_json, start_latchkey
from bench.redis_stats import redis_cpu, start_stock_redis

# py-spy's raw (collapsed) format: "frame;frame;...;frame count", a frame being
# "function (path/to/file.py:line)"; the line number is dropped to add up a function.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "latchkey_server/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "latchkey_server/":
                path = "latchkey_server/" + path
            break
    return f"{match.group('function')} ({path})"


def top_frames(collapsed: str, top: int) -> dict[str, Any]:
    """Return the ``top`` frames by inclusive and by self share of the samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # The first frame is the process/thread label py-spy adds with --subprocesses.
        frames = [_frame_name(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count

    def share(counter: collections.Counter[str]) -> list[list[object]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "inclusive_percent": share(inclusive),
            "self_percent": share(own)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="profiled load")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL: Python CPU, not waits")
    parser.add_argument("--output", type=Path, default=None,
                        help="also keep py-spy's collapsed stacks here (speedscope reads it)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="lkp-") as tmp:
        redis_proc = start_stock_redis(Path(tmp) / "redis")
        server = start_latchkey(Path(tmp) / "lk", redis_proc.url)
        admin = redis_proc.client(decode=False)
        try:
            tokens = login_tokens(server.base_url)
            wrk_cmd = ["wrk", "--latency", "-t1", "-c16", f"-d{args.seconds + 3}s",
                       "-H", f"User-Agent: {BENCH_USER_AGENT}",
                       "-H", f"Authorization: Bearer {tokens['access_token']}",
                       server.base_url + "/v1/me"]
            admin.config_set("latency-monitor-threshold", 1)
            admin.execute_command("LATENCY", "RESET")
            uptime_before = subprocess.run(["uptime"], capture_output=True,
                                           text=True).stdout.strip()
            stacks = Path(tmp) / "stacks.txt"
            with redis_cpu(admin, 1) as redis_time:
                wrk = subprocess.Popen(wrk_cmd, stdout=subprocess.PIPE, text=True)
                time.sleep(1.5)  # let every worker thread take its first requests
                subprocess.run([py_spy, "record", "--pid", str(server.proc.pid),
                                "--subprocesses", "--nonblocking", "--rate", str(args.rate),
                                "--duration", str(args.seconds), "--format", "raw",
                                "--output", str(stacks), *(["--gil"] if args.gil else [])],
                               check=True, capture_output=True)
                wrk_out, _ = wrk.communicate()
            latency = admin.execute_command("LATENCY", "LATEST")
            uptime_after = subprocess.run(["uptime"], capture_output=True,
                                          text=True).stdout.strip()
            collapsed = stacks.read_text()
            if args.output:
                args.output.write_text(collapsed)
        finally:
            server.stop()
            redis_proc.stop()
    requests = re.search(r"(\d+) requests in", wrk_out)
    summary = [line.strip() for line in wrk_out.splitlines()
               if re.match(r"\s+(50|99)%|Requests/sec|.*requests in", line)]
    # commandstats, not SLOWLOG, for the total: SLOWLOG keeps a bounded number of entries.
    evalsha = redis_time["commandstats"].get("evalsha", {"calls": 0, "usec_per_call": 0})
    per_request = (evalsha["calls"] * evalsha["usec_per_call"] / int(requests.group(1))
                   if requests else None)
    print_json({
        "wrk": summary,
        "redis_evalsha_usec_per_request": round(per_request, 2) if per_request else None,
        "redis_slowlog": redis_time["slowlog"],
        "redis_commandstats": redis_time["commandstats"],
        "redis_latency_latest": [[_text(e[0]), *e[1:]] for e in latency],
        "redis_version": redis_time["redis_version"],
        "profile": top_frames(collapsed, args.top),
        "profile_mode": "GIL holder only (CPU)" if args.gil else "every non-idle thread (wall)",
        "uptime_before": uptime_before, "uptime_after": uptime_after,
    })


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    main()
