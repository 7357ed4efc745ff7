"""The binding inputs (``X-Device-Id``, ``User-Agent``) are read the same from every kind of
header mapping a verifier is given: werkzeug's (Flask), Starlette's (FastAPI), and a plain
mapping whose keys may be in any case; an absent header is empty in all of them. The
framework mappings are looked up without scanning every header (their ``get`` ignores
case already), the plain ones with the scan."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import pytest
from latchkey_resource.binding import client_from_headers
from starlette.datastructures import Headers as StarletteHeaders
from werkzeug.datastructures import EnvironHeaders, Headers

UA = "LatchkeyDemo/1.4 (Android 14)"


def _mappings(sent: dict[str, str]) -> list[Mapping[str, str]]:
    environ = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in sent.items()}
    return [
        EnvironHeaders(environ),
        Headers(list(sent.items())),
        StarletteHeaders(raw=[(k.lower().encode(), v.encode()) for k, v in sent.items()]),
        dict(sent),
        {k.lower(): v for k, v in sent.items()},
        {k.upper(): v for k, v in sent.items()},
    ]


@pytest.mark.parametrize("mapping", _mappings({"X-Device-Id": "device-7f3a", "User-Agent": UA,
                                               "Accept": "*/*"}), ids=type)
def test_the_device_and_user_agent_are_read_from_any_header_mapping(mapping):
    client = client_from_headers(mapping, "10.0.0.7")
    assert client is not None
    assert (client.device_id, client.user_agent, client.ip) == ("device-7f3a", UA, "10.0.0.7")


@pytest.mark.parametrize("mapping", _mappings({"User-Agent": UA, "Accept": "*/*",
                                               "X-Other": "device-7f3a"}), ids=type)
def test_an_absent_device_id_is_empty_in_any_header_mapping(mapping):
    client = client_from_headers(mapping)
    assert client is not None
    assert (client.device_id, client.user_agent) == ("", UA)


def test_the_fingerprint_is_the_digest_of_the_bound_values():
    one = client_from_headers({"X-Device-Id": "a", "User-Agent": "b"})
    same = client_from_headers({"x-device-id": "a", "user-agent": "b"})
    other = client_from_headers({"X-Device-Id": "a", "User-Agent": "c"})
    assert one is not None and same is not None and other is not None
    assert one.fingerprint == same.fingerprint != other.fingerprint
    # What the token server stores at login for the same values (report mode compares it).
    assert one.fingerprint == hashlib.sha256(b"a\nb").hexdigest()[:32]
