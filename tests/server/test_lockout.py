"""D2 without a denial of service of the owner: no lockout without trying a password, and
a device that signed in before keeps working under an attack on its account (issue 13).

OWASP's authentication guidance: account lockout must not let an attacker lock out a
user at will. Registrations of a taken name have a budget of their own, and a login from
a device the account has signed in from before is counted per account and device.
One real server and Redis of the module's own, with small budgets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import PASSWORD, RedisProcess, ServerProcess
from tests.server.ops_support import sign_in, wipe_rate_limits

ACCOUNT_BUDGET = 3
NAME_BUDGET = 3


@pytest.fixture(scope="module")
def guarded(module_redis_factory: Callable[..., RedisProcess],
            module_server_factory: Callable[..., ServerProcess]
            ) -> tuple[ServerProcess, RedisProcess]:
    store = module_redis_factory()
    server = module_server_factory(
        store_url=store.url, login_failures_per_account=ACCOUNT_BUDGET,
        login_failures_per_account_window=60, registration_failures_per_name=NAME_BUDGET,
        registration_failures_per_name_window=60)
    return server, store


@pytest.fixture
def http(guarded: tuple[ServerProcess, RedisProcess]) -> Iterator[httpx.Client]:
    server, store = guarded
    wipe_rate_limits(store.client())
    with server.client() as client:
        yield client


def _login(http: httpx.Client, username: str, password: str = PASSWORD,
           **extra: str) -> httpx.Response:
    return http.post("/v1/auth/login",
                     json={"username": username, "password": password, **extra})


def test_registering_a_taken_name_never_spends_its_owners_login_budget(
        guarded: tuple[ServerProcess, RedisProcess], http: httpx.Client) -> None:
    username, _ = sign_in(guarded[0], http)
    answers = [http.post("/v1/auth/register",
                         json={"username": variant, "password": PASSWORD}).status_code
               for variant in (username.upper(), username, username.title()) * 3]
    # The probing is throttled by its own budget...
    assert answers[:NAME_BUDGET] == [409] * NAME_BUDGET and 429 in answers
    # ...and the owner, from a device never seen before, still signs in.
    assert _login(http, username).status_code == 200


def test_a_device_that_signed_in_before_keeps_working_while_the_account_is_attacked(
        guarded: tuple[ServerProcess, RedisProcess], http: httpx.Client) -> None:
    username, _ = sign_in(guarded[0], http, device_id="owners-phone-1")
    # Wrong passwords in every case, as from many addresses: the account budget runs out.
    for variant in (username.upper(), username.title(), username) * 2:
        r = _login(http, variant, "not the password 123", device_id="attacker-x")
        if r.status_code == 429:
            break
    assert r.status_code == 429
    assert _login(http, username, device_id="a-new-phone").status_code == 429
    # The owner's phone has signed in before: its logins have a budget of their own.
    r = _login(http, username, device_id="owners-phone-1")
    assert r.status_code == 200, r.text
    r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD},
                  headers={"X-Device-Id": "owners-phone-1"})
    assert r.status_code == 200, r.text


def test_a_known_device_that_guesses_is_itself_throttled(
        guarded: tuple[ServerProcess, RedisProcess], http: httpx.Client) -> None:
    # Knowing (or spoofing) a device id buys that device's budget, not unlimited guesses.
    username, _ = sign_in(guarded[0], http, device_id="shared-tablet")
    answers = [_login(http, username, "not the password 123", device_id="shared-tablet")
               .status_code for _ in range(ACCOUNT_BUDGET + 1)]
    assert answers == [401] * ACCOUNT_BUDGET + [429]
