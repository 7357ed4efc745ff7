"""Operator commands of ``latchkey-server``: users, sessions and signing keys (D5, T5).

    latchkey-server users create --username NAME [--role user|admin] [--password-stdin]
    latchkey-server sessions list --user NAME [--json]
    latchkey-server sessions revoke --user NAME (--session ID | --all)
    latchkey-server sessions sweep
    latchkey-server keys rotate

These commands are for whoever can run them with the server's configuration, that is,
who can read the instance directory (keys, mode 0700) and reach its Redis; the HTTP view
(``api/admin_sessions.py``) is for accounts with the ``admin`` role after a recent
step-up. Every command is audited: one
``admin_action`` security event naming the action, the operating-system user who ran it
and the target (by pseudonym, like every event), through the same event log, sinks and
all, as the server's.

The commands build the app through ``create_app`` so they use exactly the server's store,
key ring and event log. With no ``LATCHKEY_REDIS_URL`` they talk to the embedded Redis of
a running server through its socket in the instance directory, or start it for the length
of the command when no server is running.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from .config import load_settings
from .errors import ApiError
from .extension import Services, services
from .passwords import USERNAME_RE, PasswordPolicy
from .redis_connection import resolve_redis_url
from .serialise import session_json
from .store import Revocation
from .tokens import parse_session_id

__all__ = ["AdminError", "register_commands"]

ROLES = ("user", "admin")


class AdminError(Exception):
    """A command could not do what it was asked; the message is for the operator."""


def register_commands(sub: Any) -> None:
    """Add the operator subcommands to the ``latchkey-server`` parser."""
    users = sub.add_parser("users", help="manage user accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a user (audited)")
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=ROLES, default="user")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input instead of a prompt")
    create.set_defaults(handler=users_create)

    sessions = sub.add_parser("sessions", help="view and end users' sessions")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sessions_sub.add_parser("list", help="list a user's live sessions (audited)")
    listing.add_argument("--user", required=True, metavar="USERNAME")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=sessions_list)
    revoke = sessions_sub.add_parser("revoke", help="end sessions, reason 'admin' (audited)")
    revoke.add_argument("--user", required=True, metavar="USERNAME")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", metavar="SESSION_ID", help="end this session")
    which.add_argument("--all", action="store_true", help="end every session of the user")
    revoke.set_defaults(handler=sessions_revoke)
    sweep = sessions_sub.add_parser(
        "sweep", help="drop session records past retention, for every user (run daily)")
    sweep.set_defaults(handler=sessions_sweep)

    keys = sub.add_parser("keys", help="manage the token signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate", help="make a new signing key current (audited)")
    rotate.set_defaults(handler=keys_rotate)


# -- plumbing ----------------------------------------------------------------------
def _operator() -> str:
    """Return who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@contextlib.contextmanager
def _admin_services() -> Iterator[Services]:
    """Build the server's services (store, keys, event log) for one command."""
    from . import create_app

    settings = load_settings()
    # Beside a running server this joins its embedded Redis and leaves it running.
    url, embedded = resolve_redis_url(settings)
    try:
        app = create_app({"redis_url": url})
        with app.app_context():
            yield services()
    finally:
        if embedded is not None:
            embedded.stop()


def _audit(svc: Services, action: str, **fields: Any) -> None:
    svc.events.security("admin_action", action=action, actor=_operator(), via="cli",
                        **fields)


def _user_id(svc: Services, username: str) -> str:
    user_id = svc.store.user_id_for(username) if USERNAME_RE.fullmatch(username) else None
    if not user_id:
        raise AdminError(f"no user named {username!r}")
    return user_id


def _run(handler: Any, args: argparse.Namespace) -> int:
    try:
        with _admin_services() as svc:
            return handler(svc, args)
    except AdminError as exc:
        print(f"latchkey-server: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"latchkey-server: {exc.detail}", file=sys.stderr)
        return 1


# -- users -------------------------------------------------------------------------
def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat: ") != first:
        raise AdminError("the passwords differ")
    return first


def users_create(args: argparse.Namespace) -> int:
    """Create a user with a role; print the new user id."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        if not USERNAME_RE.fullmatch(args.username):
            raise AdminError("usernames are 3-64 letters, digits or ._@-")
        password = _read_password(args.password_stdin)
        weakness = PasswordPolicy.weakness(password, args.username)
        if weakness:
            raise AdminError(f"weak password: {weakness}")
        user_id = svc.sessions.register(args.username, svc.passwords.hash(password),
                                        role=args.role)
        _audit(svc, "users_create", user_id=user_id, role=args.role)
        print(user_id)
        return 0

    return _run(run, args)


# -- sessions ----------------------------------------------------------------------
def sessions_list(args: argparse.Namespace) -> int:
    """Print a user's live sessions."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        user_id = _user_id(svc, args.user)
        sessions = [session_json(s) for s in svc.sessions.sessions_of(user_id)]
        _audit(svc, "sessions_list", user_id=user_id, count=len(sessions))
        for s in sessions:
            s.pop("current")
            if args.json:
                print(json.dumps(s))
            else:
                print(f"{s['session_id']}  {s['auth_level']:<8}  created {s['created_at']}  "
                      f"last seen {s['last_seen_at']}  ip {s['ip'] or '-'}  "
                      f"device {s['device_name'] or '-'}  agent {s['user_agent'] or '-'}")
        if not sessions and not args.json:
            print("no live sessions")
        return 0

    return _run(run, args)


def sessions_revoke(args: argparse.Namespace) -> int:
    """End one session or all sessions of a user with reason ``admin``."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        user_id = _user_id(svc, args.user)
        if args.all:
            ended = svc.sessions.end_all(user_id, scope="all", current_reason="admin",
                                         others_reason="admin")
            revoked = [e for e in ended if e.reason == "admin"]
            _audit(svc, "sessions_revoke_all", user_id=user_id, count=len(revoked))
            print(f"ended {len(revoked)} session(s)")
            return 0
        session_id = parse_session_id(args.session)
        if session_id is None:
            raise AdminError("that is not a session id")
        outcome = svc.sessions.revoke(user_id, session_id, "admin")
        _audit(svc, "sessions_revoke", user_id=user_id, session_id=session_id,
               outcome=outcome.value)
        if outcome is not Revocation.REVOKED:
            raise AdminError(f"{args.user!r} has no live session with that id")
        print("ended 1 session")
        return 0

    return _run(run, args)


def sessions_sweep(args: argparse.Namespace) -> int:
    """Drop ended and expired session records past retention, for every user.

    The store's scripts prune a user's records whenever they touch that user's sessions;
    this reaches the users who never sign in again. It is safe while servers run (one
    short script per user) and idempotent, so a daily cron job is enough.
    """

    def run(svc: Services, args: argparse.Namespace) -> int:
        users, dropped, left = svc.store.sweep_sessions()
        _audit(svc, "sessions_sweep", users=users, dropped=dropped)
        print(f"swept {users} user(s): dropped {dropped} session record(s), {left} kept")
        return 0

    return _run(run, args)


# -- keys --------------------------------------------------------------------------
def keys_rotate(args: argparse.Namespace) -> int:
    """Make a new signing key current; the old one keeps verifying until its tokens expire."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        try:
            key = svc.keyring.rotate()
        except ValueError as exc:
            raise AdminError(str(exc)) from exc
        retention = svc.settings.signing_key_retention_seconds
        _audit(svc, "keys_rotate", kid=key.kid, retention_seconds=retention)
        print(key.kid)
        return 0

    return _run(run, args)
