"""The ``latchkey-server`` command: serve the API (the default) and operator commands."""

from __future__ import annotations

import argparse
import importlib.metadata
import signal
import sys
from collections.abc import Mapping, Sequence

from .admin import register_commands
from .config import ConfigError, Settings, load_settings

__all__ = ["build_parser", "main", "serving_settings"]


def _installed_version() -> str:
    """Return the installed distribution's version: pyproject.toml is its one source."""
    try:
        return importlib.metadata.version("latchkey-server")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; subcommands register themselves here."""
    parser = argparse.ArgumentParser(
        prog="latchkey-server",
        description="Latchkey token server. With no command, serves the API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed_version()}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the HTTP API (default)")
    for p in (parser, serve):
        # No defaults here: unset flags fall back to LATCHKEY_HOST/PORT/WORKERS/THREADS and
        # their defaults in config.py, and every value is validated there (serving_settings).
        p.add_argument("--host", help="address to bind (default: LATCHKEY_HOST, 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to bind (default: LATCHKEY_PORT, 8000)")
        p.add_argument("--workers", type=int,
                       help="gunicorn worker processes (default: LATCHKEY_WORKERS, 2)")
        p.add_argument("--threads", type=int,
                       help="threads per worker (default: LATCHKEY_THREADS, 8)")
        p.add_argument("--server", choices=("gunicorn", "granian"),
                       help="production WSGI server (default: LATCHKEY_SERVER, gunicorn)")
        p.add_argument("--dev", action="store_true",
                       help="use werkzeug's development server instead")
    register_commands(sub)  # users, sessions, keys: operator commands (admin.py)
    return parser


_SERVING_FLAGS = ("host", "port", "workers", "threads", "server")


def serving_settings(args: argparse.Namespace,
                     environ: Mapping[str, str] | None = None) -> Settings:
    """Return the validated settings, with the serving flags given on the command line.

    A flag is an override, so it wins over its ``LATCHKEY_*`` variable and is validated
    like it: ``--workers 0`` is a configuration error, not a gunicorn crash.
    """
    flags = {name: getattr(args, name) for name in _SERVING_FLAGS
             if getattr(args, name, None) is not None}
    return load_settings(environ, flags)


def _serve(args: argparse.Namespace) -> int:
    from .serving import serve_dev, serve_gunicorn

    settings = serving_settings(args)
    # SIGTERM ends the dev server like Ctrl-C, so the embedded Redis is stopped cleanly.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if args.dev:
            serve_dev(settings, settings.host, settings.port)
        elif settings.server == "granian":
            from .serving_granian import serve_granian

            serve_granian(settings, settings.host, settings.port, settings.workers,
                          settings.threads)
        else:
            serve_gunicorn(settings, settings.host, settings.port, settings.workers,
                           settings.threads)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in (None, "serve"):
            return _serve(args)
        handler = getattr(args, "handler", None)
        if handler is None:
            build_parser().print_help()
            return 2
        return int(handler(args) or 0)
    except ConfigError as exc:
        print(f"latchkey-server: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
