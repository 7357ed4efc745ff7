"""Operator commands of ``latchkey-server``: users, sessions, signing keys and OAuth
clients (D5, T5, R2).

    latchkey-server users create --username NAME [--role user|admin] [--password-stdin]
    latchkey-server sessions list --user NAME [--json]
    latchkey-server sessions revoke --user NAME (--session=ID | --all)
    latchkey-server sessions sweep
    latchkey-server keys list [--json]
    latchkey-server keys rotate
    latchkey-server keys withdraw -- KID      (``--``: a kid may start with '-')
    latchkey-server clients create --name NAME --type public|resource
    latchkey-server clients list
    latchkey-server clients delete CLIENT_ID

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
import time
from collections.abc import Callable, Iterator
from typing import Any

from .config import load_settings
from .errors import ApiError
from .extension import Services, services
from .keys import JWKS_MAX_AGE_SECONDS
from .oauth import registry
from .oauth.clients import CLIENT_TYPES
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
    which.add_argument("--session", metavar="SESSION_ID",
                       help="end this session; write --session=ID, since a session id "
                            "may start with '-'")
    which.add_argument("--all", action="store_true", help="end every session of the user")
    revoke.set_defaults(handler=sessions_revoke)
    sweep = sessions_sub.add_parser(
        "sweep", help="drop session records past retention, for every user (run daily)")
    sweep.set_defaults(handler=sessions_sweep)

    keys = sub.add_parser("keys", help="manage the token signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    key_list = keys_sub.add_parser("list", help="list the signing keys and their status "
                                                "(audited)")
    key_list.add_argument("--json", action="store_true", help="one JSON object per line")
    key_list.set_defaults(handler=keys_list)
    rotate = keys_sub.add_parser(
        "rotate", help="promote the next signing key to current, publish a new next (audited)")
    rotate.set_defaults(handler=keys_rotate)
    withdraw = keys_sub.add_parser(
        "withdraw", help="withdraw a compromised signing key at once (audited)")
    withdraw.add_argument("kid", metavar="KID",
                          help="the key's kid (keys list, a token header); write `-- KID`, "
                               "since one kid in 64 starts with '-'")
    withdraw.set_defaults(handler=keys_withdraw)

    clients = sub.add_parser("clients", help="manage OAuth clients (docs/OAUTH.md)")
    clients_sub = clients.add_subparsers(dest="clients_command", required=True)
    new = clients_sub.add_parser(
        "create", help="register a client; print its id (and a resource client's secret, "
                       "shown once) as JSON (audited)")
    new.add_argument("--name", required=True)
    new.add_argument("--type", required=True, choices=CLIENT_TYPES, dest="client_type")
    new.set_defaults(handler=clients_create)
    clients_sub.add_parser("list", help="list the registered clients as JSON lines "
                                        "(audited)").set_defaults(handler=clients_list)
    gone = clients_sub.add_parser("delete", help="remove a client (audited)")
    gone.add_argument("client_id", metavar="CLIENT_ID")
    gone.set_defaults(handler=clients_delete)


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


def _run(handler: Callable[[Services, argparse.Namespace], int], args: argparse.Namespace) -> int:
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
    short script per user) and idempotent, so a daily cron job is enough. It also
    records the live sessions it counted, which ``/metrics`` serves as
    ``latchkey_live_sessions``: run it more often for a fresher figure.
    """

    def run(svc: Services, args: argparse.Namespace) -> int:
        swept = svc.store.sweep_sessions()
        _audit(svc, "sessions_sweep", users=swept.users, dropped=swept.dropped,
               live=swept.live)
        print(f"swept {swept.users} user(s): dropped {swept.dropped} session record(s), "
              f"{swept.left} kept, {swept.live} live")
        return 0

    return _run(run, args)


# -- keys --------------------------------------------------------------------------
def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                       time.gmtime(timestamp))


def keys_list(args: argparse.Namespace) -> int:
    """Print every signing key the manifest records: kid, status and times."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        entries = svc.keyring.listing()
        _audit(svc, "keys_list", count=len(entries))
        for entry in entries:
            if args.json:
                print(json.dumps(entry))
            else:
                print(f"{entry['kid']}  {entry['status']:<9}  created "
                      f"{_when(entry.get('created_at'))}  retired "
                      f"{_when(entry.get('retired_at'))}  withdrawn "
                      f"{_when(entry.get('withdrawn_at'))}")
        return 0

    return _run(run, args)


def keys_rotate(args: argparse.Namespace) -> int:
    """Promote the next key; the old one keeps verifying until its tokens expire."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        try:
            key = svc.keyring.rotate()
        except ValueError as exc:
            raise AdminError(str(exc)) from exc
        published_seconds = int(time.time() - key.created_at)
        retention = svc.settings.signing_key_retention_seconds
        upcoming = svc.keyring.next
        _audit(svc, "keys_rotate", kid=key.kid, next_kid=upcoming.kid if upcoming else None,
               published_seconds=published_seconds, retention_seconds=retention)
        if published_seconds < JWKS_MAX_AGE_SECONDS:
            # Not refused: rotating early only costs verifiers that cached the JWKS one
            # refetch when they meet the new kid (what they did before next keys existed).
            print(f"latchkey-server: note: the promoted key was published {published_seconds} s "
                  f"ago; verifiers may cache the JWKS for {JWKS_MAX_AGE_SECONDS} s, so some "
                  "will refetch it on their first token signed by this key", file=sys.stderr)
        print(key.kid)
        return 0

    return _run(run, args)


def keys_withdraw(args: argparse.Namespace) -> int:
    """Withdraw a signing key at once: out of the JWKS, its tokens refused everywhere.

    Sessions stay live: a client whose access token is refused refreshes and gets one
    signed by the key that signs now (the next key, promoted if the withdrawn key was
    current).
    """

    def run(svc: Services, args: argparse.Namespace) -> int:
        try:
            outcome = svc.keyring.withdraw(args.kid)
        except ValueError as exc:
            raise AdminError(str(exc)) from exc
        _audit(svc, "keys_withdraw", kid=outcome.kid, already=outcome.already_withdrawn,
               promoted=outcome.promoted, current_kid=outcome.current.kid,
               next_kid=outcome.next.kid if outcome.next else None)
        if outcome.already_withdrawn:
            print(f"{outcome.kid} was already withdrawn")
        else:
            print(f"withdrew {outcome.kid}; {outcome.current.kid} signs"
                  + (" (promoted)" if outcome.promoted else ""))
        return 0

    return _run(run, args)


# -- OAuth clients -----------------------------------------------------------------
MAX_CLIENT_NAME = 100


def clients_create(args: argparse.Namespace) -> int:
    """Register an OAuth client; print ``{"client_id", "client_secret"}`` (API.md)."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        name = args.name.strip()
        if not name or len(name) > MAX_CLIENT_NAME or not name.isprintable():
            raise AdminError(f"a client name is 1-{MAX_CLIENT_NAME} printable characters")
        new = registry().create(name, args.client_type)
        _audit(svc, "clients_create", client_id=new.client_id, client_type=new.client_type)
        out: dict[str, str] = {"client_id": new.client_id}
        if new.client_secret is not None:
            out["client_secret"] = new.client_secret  # shown once, stored as a keyed hash
        print(json.dumps(out))
        return 0

    return _run(run, args)


def clients_list(args: argparse.Namespace) -> int:
    """Print the registered clients, one JSON object per line (never a secret)."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        records = registry().list()
        _audit(svc, "clients_list", count=len(records))
        for record in records:
            print(json.dumps({"client_id": record.client_id, "name": record.name,
                              "type": record.client_type, "created_at": record.created_at}))
        return 0

    return _run(run, args)


def clients_delete(args: argparse.Namespace) -> int:
    """Remove a registered client: its tokens stop refreshing and introspecting at once."""

    def run(svc: Services, args: argparse.Namespace) -> int:
        deleted = registry().delete(args.client_id)
        _audit(svc, "clients_delete", client_id=args.client_id, deleted=deleted)
        if not deleted:
            raise AdminError("no client with that id")
        print("deleted 1 client")
        return 0

    return _run(run, args)
