"""Register OAuth clients and authenticate them at the OAuth endpoints (RFC 6749 section 2).

Two kinds (API.md): ``public`` clients are apps, which cannot keep a secret and name
themselves with ``client_id`` (section 2.3: no authentication, ``none``); ``resource``
clients are backend services that introspect tokens and authenticate with HTTP Basic
(section 2.3.1, ``client_secret_basic``). One public client is built in and never stored:
``LATCHKEY_DEFAULT_CLIENT_ID``, which every ``/v1`` login is issued to.

A resource client's secret (256 bits from the CSPRNG) is shown once, when it is created,
and stored only as a keyed hash (HMAC-SHA-256 under a subkey of the server's HMAC secret,
as refresh tokens are): a dump of the store yields no usable secret, and a fast keyed
hash is enough for a random secret that no dictionary holds. The registry lives in the
store (``store.py`` owns its key); every request reads it, so a client created while the
server runs works at once in every worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote_plus

from flask import Request

from ..config import CLIENT_ID_RE, Settings
from ..keys import b64url
from ..serialise import rfc3339
from ..store import ClientRecord, SessionStore
from .errors import InvalidClientError, InvalidRequestError

__all__ = ["CLIENT_TYPES", "ClientRegistry", "NewClient", "OAuthClient"]

CLIENT_TYPES = ("public", "resource")
ClientType = Literal["public", "resource"]
_SECRET_BYTES = 32
_CLIENT_ID_BYTES = 12  # 96 random bits: ids are public, but need not be guessable


@dataclass(frozen=True)
class OAuthClient:
    """An authenticated (or, for a public client, identified) client of one request."""

    client_id: str
    client_type: str
    name: str


@dataclass(frozen=True)
class NewClient:
    """A client just created: the only time its secret exists outside the caller."""

    client_id: str
    client_type: str
    name: str
    client_secret: str | None = field(default=None, repr=False)


class ClientRegistry:
    """The built-in public client and the registered ones, and their authentication."""

    def __init__(self, settings: Settings, store: SessionStore, secret_hash_key: bytes) -> None:
        self._settings = settings
        self._store = store
        self._key = secret_hash_key

    # -- management (the ``clients`` CLI) ---------------------------------------------
    def create(self, name: str, client_type: ClientType) -> NewClient:
        """Register a client with a fresh id (and a secret, for a resource client)."""
        if client_type not in CLIENT_TYPES:
            raise ValueError(f"client type must be one of {', '.join(CLIENT_TYPES)}")
        secret = b64url(secrets.token_bytes(_SECRET_BYTES)) if client_type == "resource" else None
        while True:  # a collision of 96 random bits will not happen; if it does, redraw
            client_id = f"lkc_{b64url(secrets.token_bytes(_CLIENT_ID_BYTES))}"
            record = ClientRecord(client_id, name, client_type, rfc3339(),
                                  self._hash(secret) if secret else "")
            if self._store.add_client(record):
                return NewClient(client_id, client_type, name, secret)

    def list(self) -> list[ClientRecord]:
        """Return the registered clients (the built-in one is not stored)."""
        return self._store.list_clients()

    def delete(self, client_id: str) -> bool:
        """Remove a registered client; its tokens stop refreshing at once."""
        return self._store.delete_client(client_id)

    # -- authentication ---------------------------------------------------------------
    def lookup(self, client_id: str) -> OAuthClient | None:
        """Return the client with this id, the built-in one included, or ``None``."""
        if client_id == self._settings.default_client_id:
            return OAuthClient(client_id, "public", "built-in")
        if not CLIENT_ID_RE.fullmatch(client_id):
            return None  # not an id we could have issued: no store lookup
        record = self._store.get_client(client_id)
        return OAuthClient(record.client_id, record.client_type, record.name) if record else None

    def authenticate(self, req: Request, form: dict[str, str]) -> OAuthClient:
        """Identify the request's client by section 2.3: HTTP Basic, or ``client_id``.

        Credentials in the ``Authorization`` header are checked first; failing them is
        401 with ``WWW-Authenticate: Basic`` (section 5.2). A public client may send its
        id in the form, or as Basic with an empty password (what requests-oauthlib and
        Authlib's ``client_secret_basic`` send for a client without a secret). A client
        secret in the form is refused: API.md admits secrets in the header only.
        """
        if "client_secret" in form:
            raise InvalidRequestError(description="Send a client secret with HTTP Basic only")
        header = req.headers.get("Authorization")
        if header is not None:
            client_id, secret = _basic_credentials(header)
            if form.get("client_id", client_id) != client_id:
                raise InvalidRequestError(description="Two different client ids")
            client = self._verified(client_id, secret)
            if client is None:
                raise _unauthorised("Client authentication failed")
            return client
        client_id = form.get("client_id", "")
        if not client_id:
            raise InvalidClientError(description="Name the client with client_id")
        client = self.lookup(client_id)
        if client is None:
            raise InvalidClientError(description="Unknown client")
        if client.client_type != "public":
            raise _unauthorised("This client must authenticate with HTTP Basic")
        return client

    def _verified(self, client_id: str, secret: str) -> OAuthClient | None:
        """Return the client these Basic credentials prove, or ``None``.

        One store read for the client and its secret hash: every introspection pays for
        this call (bench/introspection.py measured a second read of the same record as
        a third of its Redis round trips).
        """
        if client_id == self._settings.default_client_id:
            client = self.lookup(client_id)
            return client if secret == "" else None  # a public client has no secret
        if not CLIENT_ID_RE.fullmatch(client_id):
            return None  # not an id we could have issued: no store lookup
        record = self._store.get_client(client_id)
        if record is None:
            return None
        client = OAuthClient(record.client_id, record.client_type, record.name)
        if record.client_type == "public":
            return client if secret == "" else None
        if not record.secret_hash or not secret:
            return None
        return client if hmac.compare_digest(record.secret_hash, self._hash(secret)) else None

    def _hash(self, secret: str) -> str:
        return b64url(hmac.new(self._key, secret.encode(), hashlib.sha256).digest())


def _unauthorised(description: str) -> InvalidClientError:
    """Return section 5.2's 401 ``invalid_client``, which carries ``WWW-Authenticate``."""
    return InvalidClientError(description=description, status_code=401)


def _basic_credentials(header: str) -> tuple[str, str]:
    """Return (client id, secret) from ``Authorization: Basic``, each form-urldecoded as
    section 2.3.1 prescribes; anything malformed is 401 ``invalid_client``."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip() or len(value) > 1024:
        raise _unauthorised("Client authentication failed")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error, or non-ASCII text
        raise _unauthorised("Client authentication failed") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _unauthorised("Client authentication failed")
    try:
        return (unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict"))
    except UnicodeDecodeError as exc:
        raise _unauthorised("Client authentication failed") from exc
