"""The demo ``App``: UI state in Kivy properties, SDK work on a worker, results on the UI.

Screens (one ``.kv`` file each in ``kv/``) only bind to the properties below and call one
method of this class per handler. Every method that talks to the server submits a job to
:class:`~latchkey_demo.worker.Worker` and returns at once; the job's outcome lands in an
``_on_*`` method on the UI thread. SDK events (``signed_out`` with a reason,
``idle_warning``) arrive on SDK threads and hop to the UI thread with ``@mainthread``.

Mobile life-cycle policy lives in :meth:`LatchkeyDemoApp.on_pause` and
:meth:`LatchkeyDemoApp.on_resume`: coming back after the idle limit means signed out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock, mainthread
from kivy.core.window import Window
from kivy.lang import Builder
from kivy.properties import (
    BooleanProperty,
    ListProperty,
    NumericProperty,
    ObjectProperty,
    OptionProperty,
    StringProperty,
)
from kivy.uix.screenmanager import FadeTransition, ScreenManager
from latchkey_client import (
    AuthEvent,
    EventName,
    LatchkeyClient,
    LatchkeyError,
    SessionEndedError,
    SignOutReason,
    StepUpRequiredError,
    Storage,
    install_redaction,
)
from latchkey_client.idle import default_warning_seconds

from . import screens as _screens  # noqa: F401 - registers the widget classes the .kv uses
from .platform_setup import DemoSettings, choose_storage, device_id, load_settings
from .widgets import IdleWarningPopup
from .wording import (
    describe_error,
    fingerprint,
    format_countdown,
    format_relative,
    short_user_agent,
    sign_out_message,
)

__all__ = ["LatchkeyDemoApp", "boot_clock", "install_log_hygiene"]

_log = logging.getLogger("latchkey_demo")

KV_DIR = Path(__file__).parent / "kv"
#: Load order: the shared theme first, then one file per screen.
KV_FILES = ("theme.kv", "signin.kv", "register.kv", "home.kv", "sessions.kv",
            "sensitive.kv", "password.kv", "idle.kv")
SIGNED_IN_SCREENS = ("home", "sessions", "sensitive", "password")


def boot_clock() -> float:
    """Return seconds on a monotonic clock that keeps counting while the phone sleeps.

    ``time.monotonic`` stops during suspend on Linux and Android, so a phone locked for an
    hour would look paused for seconds; ``CLOCK_BOOTTIME`` includes suspend and, like
    ``monotonic``, cannot be moved by changing the device's clock.
    """
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


class _SessionPathFilter(logging.Filter):
    """Mask session ids in URL paths (``DELETE /v1/auth/sessions/<id>``).

    httpx logs each request's URL at INFO; a session id grants nothing, but the project
    keeps it out of logs everywhere (API.md), and the SDK's token filter does not know it.
    """

    _pattern = re.compile(r"(/v1/auth/sessions/)[^\s\"'?#/]+")

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message with the id masked; never drop the record."""
        message = record.getMessage()
        masked = self._pattern.sub(r"\1[REDACTED]", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_log_hygiene() -> None:
    """Mask tokens (the SDK's filter) and session ids in whatever the app's handlers write."""
    install_redaction()
    session_filter = _SessionPathFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _SessionPathFilter) for f in handler.filters):
            handler.addFilter(session_filter)


class LatchkeyDemoApp(App):
    """Sign in, see the session, manage devices, step up, change password, sign out."""

    title = "Latchkey"

    # -- navigation and feedback -------------------------------------------------------------
    #: The screen on show; the ScreenManager follows it.
    screen = StringProperty("splash")
    #: A network call is under way: spinners turn, submit buttons are disabled.
    busy = BooleanProperty(False)
    busy_text = StringProperty("")
    #: One message line on the current screen: errors, confirmations, sign-out reasons.
    notice = StringProperty("")
    notice_kind = OptionProperty("info", options=["info", "error", "success", "warning"])
    #: Why the last session ended, as a :class:`SignOutReason` value ("" while signed in).
    signed_out_reason = StringProperty("")

    # -- storage -----------------------------------------------------------------------------
    #: Whether "Stay signed in" can be offered (a secure store exists on this device).
    secure_storage_available = BooleanProperty(True)
    storage_note = StringProperty("")

    # -- the signed-in user ------------------------------------------------------------------
    username = StringProperty("")
    user_id_short = StringProperty("")
    auth_level = StringProperty("normal")
    session_fingerprint = StringProperty("—")
    device_name = StringProperty("")
    server_url = StringProperty("")
    idle_seconds_left = NumericProperty(0.0)
    idle_total_seconds = NumericProperty(0.0)
    idle_text = StringProperty("—")
    absolute_text = StringProperty("—")
    #: The live sessions, as dicts the Sessions screen renders (no tokens in them).
    sessions = ListProperty([])
    sessions_loaded = BooleanProperty(False)

    # -- sensitive action and password change ------------------------------------------------
    step_up_prompt = BooleanProperty(False)
    sensitive_done = BooleanProperty(False)
    sensitive_before = StringProperty("")
    sensitive_after = StringProperty("")
    password_done = BooleanProperty(False)
    password_signed_out_count = NumericProperty(0)
    password_before = StringProperty("")
    password_after = StringProperty("")

    # -- idle warning ------------------------------------------------------------------------
    idle_warning_open = BooleanProperty(False)
    idle_warning_text = StringProperty("")

    #: The SDK client of the current sign-in (``None`` before the first one).
    client = ObjectProperty(None, allownone=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The clock for pause/resume and activity; tests replace it to travel in time.
        self.clock: Callable[[], float] = boot_clock
        self.settings: DemoSettings | None = None
        self.storage: Storage | None = None
        self.worker: Any = None
        self._device_id = ""
        self._unsubscribe: list[Callable[[], None]] = []
        self._paused_at: float | None = None
        self._last_activity_at = 0.0
        self._local_reason: SignOutReason | None = None
        self._idle_popup: IdleWarningPopup | None = None
        self._ticker: Any = None
        self._checker: Any = None
        self._pending_jobs = 0

    # == life cycle ==========================================================================

    def build(self) -> ScreenManager:
        """Load the theme and screens, pick storage, and resume a stored session if any."""
        from .worker import Worker

        install_log_hygiene()
        self.settings = load_settings(Path(self.user_data_dir))
        self.server_url = self.settings.server_url
        self.device_name = self.settings.device_name
        self.storage, note = choose_storage(self.settings)
        self.secure_storage_available = note is None
        self.storage_note = note or "Keeps you signed in with this device's secure storage."
        self._device_id = device_id(self.settings.data_dir)
        self.worker = Worker()
        for name in KV_FILES:
            Builder.load_file(str(KV_DIR / name))
        root = Builder.load_string(_ROOT_KV)
        root.transition = FadeTransition(duration=0.15)
        self.bind(screen=lambda _app, name: setattr(root, "current", name))
        Window.bind(on_touch_down=self._on_user_activity, on_key_down=self._on_user_activity)
        self._ticker = Clock.schedule_interval(self._tick, 0.25)
        Clock.schedule_once(lambda _dt: self._start(), 0)
        return root

    def _start(self) -> None:
        client = self._new_client(stay_signed_in=True)
        if client.is_signed_in:
            self._set_busy("Restoring your session…")
            self.screen = "splash"
            self.worker.submit(client.restore, on_done=self._on_restored,
                               on_error=self._on_restore_failed)
        else:
            self.screen = "signin"

    def on_pause(self) -> bool:
        """Keep running in the background; note when we left (mobile life-cycle policy)."""
        self._paused_at = self.clock()
        self._stop_session_checks()
        return True

    def on_resume(self) -> None:
        """Sign out if the user has been away longer than the idle limit, else re-check.

        The SDK's idle timer counts on ``time.monotonic``, which stands still while the
        phone sleeps; the app measures the pause on the boot clock and applies the policy
        itself. The server enforces its own limit regardless (L2): the check that follows
        surfaces it.
        """
        paused_at, self._paused_at = self._paused_at, None
        client = self.client
        if client is None or not client.is_signed_in:
            return
        limit = self.idle_total_seconds
        away = self.clock() - (paused_at if paused_at is not None else self.clock())
        idle = self.clock() - self._last_activity_at
        if limit and (away >= limit or idle >= limit):
            _log.info("resumed after the idle limit; signing out")
            self._end_locally(SignOutReason.IDLE)
            return
        self._start_session_checks()
        self.check_session()

    def on_stop(self) -> None:
        """Stop timers and the worker; the session stays valid for the next start."""
        self._stop_session_checks()
        if self._ticker is not None:
            self._ticker.cancel()
        if self.worker is not None:
            self.worker.shutdown()
        if self.client is not None:
            self.client.close()

    # == sign in, register, restore ==========================================================

    def sign_in(self, username: str, password: str, stay_signed_in: bool) -> None:
        """Sign in with a password; "stay signed in" decides if the refresh token persists."""
        if not username.strip() or not password:
            self._say("Enter your username and password.", "error")
            return
        stay = bool(stay_signed_in and self.secure_storage_available)
        client = self._new_client(stay_signed_in=stay)
        self._set_busy("Signing in…")
        self.worker.submit(lambda: client.login(username=username.strip(), password=password),
                           on_done=self._on_signed_in, on_error=self._on_error)

    def register(self, username: str, password: str, confirm: str) -> None:
        """Create an account on the demo server, then sign in with it."""
        if password != confirm:
            self._say("The two passwords don't match.", "error")
            return
        if not username.strip():
            self._say("Choose a username.", "error")
            return
        client = self._new_client(stay_signed_in=False)
        name = username.strip()

        def job() -> Any:
            client.register(username=name, password=password)
            return client.login(username=name, password=password)

        self._set_busy("Creating your account…")
        self.worker.submit(job, on_done=self._on_signed_in, on_error=self._on_error)

    def _on_signed_in(self, _info: Any) -> None:
        self._clear_busy()
        self._enter_signed_in("Signed in.")

    def _on_restored(self, info: Any) -> None:
        self._clear_busy()
        if info is None:
            self.screen = "signin"
            return
        self._enter_signed_in("Welcome back — your session was restored.")

    def _on_restore_failed(self, error: BaseException) -> None:
        self._clear_busy()
        if not isinstance(error, SessionEndedError):
            # The stored session may still be fine: the next start tries again.
            self._say(describe_error(error) + " Your saved session was kept.", "error")
        self.screen = "signin"

    def _enter_signed_in(self, message: str) -> None:
        self.signed_out_reason = ""
        self._local_reason = None
        self._last_activity_at = self.clock()
        self._reset_flows()
        self._update_session_facts()
        self._update_idle()  # show the countdown at once, not after the next tick
        self.screen = "home"
        self._say(message, "success")
        self._start_session_checks()
        self.refresh_home()

    # == sign out ============================================================================

    def logout(self) -> None:
        """Sign out of this session: the screen changes now, the server call follows."""
        client = self.client
        if client is None:
            self.screen = "signin"
            return
        self._local_reason = SignOutReason.USER
        self._show_signed_out(SignOutReason.USER)
        self.worker.submit(client.logout, on_done=self._on_logged_out,
                           on_error=lambda _e: None)

    def _on_logged_out(self, result: Any) -> None:
        if getattr(result, "pending", False) and self.screen == "signin":
            self._say("You signed out on this device. The server could not be reached; "
                      "the sign-out will be sent again when it can be.", "warning")

    def logout_others(self) -> None:
        """Sign out every other device of this account."""
        client = self.client
        self._run(lambda: client.logout_all(scope="others"), "Signing out other devices…",
                  lambda _r: self._after_sessions_change("Signed out all other devices."))

    def logout_everywhere(self) -> None:
        """Sign out every session of this account, this one included."""
        client = self.client
        self._local_reason = SignOutReason.USER
        self._run(lambda: client.logout_all(scope="all"), "Signing out everywhere…",
                  lambda _r: self._show_signed_out(
                      SignOutReason.USER, "You signed out on all your devices."))

    def revoke_session(self, session_id: str) -> None:
        """End one remote session, then reload the list."""
        client = self.client
        self._run(lambda: client.revoke_session(session_id), "Signing out that device…",
                  lambda _r: self._after_sessions_change("That device was signed out."))

    def _after_sessions_change(self, message: str) -> None:
        self._say(message, "success")
        self.refresh_sessions()

    def _end_locally(self, reason: SignOutReason) -> None:
        """Sign out for a reason of the app's own (idle after a pause), then tell the user."""
        client = self.client
        self._local_reason = reason
        self._show_signed_out(reason)
        if client is not None:
            self.worker.submit(client.logout, on_error=lambda _e: None)

    @mainthread
    def _on_sdk_signed_out(self, event: AuthEvent, client: LatchkeyClient) -> None:
        if client is not self.client:
            return  # an older client's goodbye; a new sign-in has happened since
        reason = self._local_reason or event.reason or SignOutReason.REVOKED
        self._show_signed_out(reason)

    def _show_signed_out(self, reason: SignOutReason, message: str | None = None) -> None:
        self._stop_session_checks()
        self._close_idle_popup()
        self._pending_jobs = 0
        self.busy = False
        self.busy_text = ""
        self._reset_flows()
        self.sessions = []
        self.sessions_loaded = False
        self.username = ""
        self.user_id_short = ""
        self.session_fingerprint = "—"
        self.signed_out_reason = reason.value
        self.screen = "signin"
        kind = "info" if reason is SignOutReason.USER else "warning"
        self._say(message or sign_out_message(reason), kind)

    # == home and session checks =============================================================

    def refresh_home(self) -> None:
        """Load the profile (``/v1/me``) and this device's session entry."""
        client = self.client

        def job() -> tuple[dict[str, Any], list[Any]]:
            me = client.get("/v1/me").json()
            return me, client.sessions()

        self._run(job, "Loading your profile…", self._on_home_loaded)

    def _on_home_loaded(self, result: tuple[dict[str, Any], list[Any]]) -> None:
        me, sessions = result
        self.username = str(me.get("username", ""))
        self.user_id_short = str(me.get("user_id", ""))[:12]
        self._show_sessions(sessions)
        self._update_session_facts()

    def check_session(self) -> None:
        """Ask the server whether this session is still live (quietly, no spinner).

        This is how a remote sign-out, a password change elsewhere or a server-side
        timeout reaches a user who is just looking at the screen; the SDK turns the
        server's answer into a ``signed_out`` event with the reason.
        """
        client = self.client
        if client is None or not client.is_signed_in:
            return
        self.worker.submit(lambda: client.get("/v1/me").json(),
                           on_done=lambda _me: self._update_session_facts(),
                           on_error=self._on_quiet_error)

    def _on_quiet_error(self, error: BaseException) -> None:
        if isinstance(error, SessionEndedError):
            return  # the signed_out event explains it
        if isinstance(error, LatchkeyError):
            _log.info("session check failed: %s", type(error).__name__)
            return
        _log.error("session check failed unexpectedly: %s", type(error).__name__)

    def _start_session_checks(self) -> None:
        self._stop_session_checks()
        seconds = self.settings.session_check_seconds if self.settings else 0
        if seconds > 0:
            self._checker = Clock.schedule_interval(lambda _dt: self.check_session(), seconds)

    def _stop_session_checks(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            self._checker = None

    # == sessions ============================================================================

    def refresh_sessions(self) -> None:
        """Reload the list of live sessions."""
        client = self.client
        self._run(client.sessions, "Loading sessions…", self._show_sessions)

    def _show_sessions(self, sessions: list[Any]) -> None:
        rows = []
        for s in sorted(sessions, key=lambda s: (not s.current, s.device_name or "")):
            rows.append({
                "session_id": s.session_id,
                "device": s.device_name or "Unnamed device",
                "agent": short_user_agent(s.user_agent),
                "seen": ("Active now" if s.current
                         else f"Last seen {format_relative(s.last_seen_at)}"),
                "ip": s.ip or "",
                "current": s.current,
                "elevated": s.auth_level == "elevated",
            })
            if s.current:
                self.device_name = s.device_name or self.device_name
        self.sessions = rows
        self.sessions_loaded = True

    # == sensitive action (step-up) ==========================================================

    def start_sensitive_action(self) -> None:
        """Try the sensitive action; the server asks for a fresh password first (step-up)."""
        client = self.client
        self.sensitive_done = False
        self._run(lambda: client.post("/v1/me/sensitive", json={}).json(),
                  "Checking…", self._on_sensitive_done, on_error=self._on_sensitive_refused)

    def _on_sensitive_refused(self, error: BaseException) -> None:
        if isinstance(error, StepUpRequiredError):
            self._clear_busy()
            self.sensitive_before = self.session_fingerprint
            self.step_up_prompt = True
            self._say("Confirm your password to continue.", "info")
            return
        self._on_error(error)

    def confirm_step_up(self, password: str) -> None:
        """Re-authenticate with the password (new session id), then do the action."""
        if not password:
            self._say("Enter your password.", "error")
            return
        client = self.client

        def job() -> dict[str, Any]:
            client.reauthenticate(password=password)
            return client.post("/v1/me/sensitive", json={}).json()

        self._run(job, "Confirming…", self._on_sensitive_done)

    def cancel_step_up(self) -> None:
        """Close the password prompt without doing anything."""
        self.step_up_prompt = False
        self._say("", "info")

    def _on_sensitive_done(self, _result: dict[str, Any]) -> None:
        self._update_session_facts()
        if not self.sensitive_before:
            self.sensitive_before = self.session_fingerprint
        self.sensitive_after = self.session_fingerprint
        self.step_up_prompt = False
        self.sensitive_done = True
        self._say("Sensitive action completed.", "success")

    # == password change =====================================================================

    def change_password(self, current: str, new: str, confirm: str) -> None:
        """Change the password; the server signs out every other device."""
        if new != confirm:
            self._say("The new passwords don't match.", "error")
            return
        if not current or not new:
            self._say("Fill in your current and your new password.", "error")
            return
        client = self.client
        before = self.session_fingerprint

        def job() -> tuple[int, int]:
            others_before = sum(1 for s in client.sessions() if not s.current)
            client.change_password(current_password=current, new_password=new)
            others_after = sum(1 for s in client.sessions() if not s.current)
            return others_before, others_after

        def done(counts: tuple[int, int]) -> None:
            self._update_session_facts()
            self.password_before = before
            self.password_after = self.session_fingerprint
            self.password_signed_out_count = counts[0] - counts[1]
            self.password_done = True
            self._say("Password changed.", "success")

        self.password_done = False
        self._run(job, "Changing password…", done)

    # == idle ================================================================================

    def stay_signed_in(self) -> None:
        """Answer the idle warning: count as activity, and tell the server we are here."""
        if self.client is not None:
            self.client.touch()
        self._last_activity_at = self.clock()
        self._close_idle_popup()
        self.check_session()

    @mainthread
    def _on_sdk_idle_warning(self, _event: AuthEvent, client: LatchkeyClient) -> None:
        if client is not self.client or not client.is_signed_in:
            return
        if self._idle_popup is None:
            self._idle_popup = IdleWarningPopup()
            self._idle_popup.open()
        self.idle_warning_open = True
        self._update_idle()

    def _close_idle_popup(self) -> None:
        popup, self._idle_popup = self._idle_popup, None
        if popup is not None:
            popup.dismiss()
        self.idle_warning_open = False

    def _on_user_activity(self, *_args: Any) -> bool:
        """Count taps and key presses as activity (L6); never consume the event."""
        if self.client is not None and self.client.is_signed_in:
            self.client.touch()
            self._last_activity_at = self.clock()
        return False

    # == navigation ==========================================================================

    def go(self, name: str) -> None:
        """Show another screen, loading what it displays."""
        self._say("", "info")
        self.screen = name
        if name == "sessions":
            self.refresh_sessions()
        elif name == "home":
            self.refresh_home()
        elif name == "sensitive":
            self.step_up_prompt = False
            self.sensitive_done = False
        elif name == "password":
            self.password_done = False

    def dismiss_notice(self) -> None:
        """Hide the message line."""
        self.notice = ""

    # == plumbing ============================================================================

    def _new_client(self, *, stay_signed_in: bool) -> LatchkeyClient:
        """Replace the SDK client (a sign-in decides whether the refresh token persists)."""
        old = self.client
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if old is not None:
            old.close()
        assert self.settings is not None
        client = LatchkeyClient(
            base_url=self.settings.server_url,
            storage=self.storage,
            stay_signed_in=stay_signed_in,
            idle_warning_seconds=self.settings.idle_warning_seconds,
            device_id=self._device_id,
            device_name=self.settings.device_name,
            user_agent=self.settings.user_agent,
        )
        self._unsubscribe = [
            client.on(EventName.SIGNED_OUT, lambda e: self._on_sdk_signed_out(e, client)),
            client.on(EventName.IDLE_WARNING, lambda e: self._on_sdk_idle_warning(e, client)),
        ]
        self.client = client
        return client

    def _run(self, job: Callable[[], Any], busy_text: str, on_done: Callable[[Any], Any],
             *, on_error: Callable[[BaseException], Any] | None = None) -> None:
        """Run a signed-in job on the worker with a spinner; errors become messages."""
        if self.client is None or not self.client.is_signed_in:
            self._show_signed_out(SignOutReason.REVOKED)
            return
        self._set_busy(busy_text)

        def done(result: Any) -> None:
            self._clear_busy()
            on_done(result)

        def failed(error: BaseException) -> None:
            self._clear_busy()
            (on_error or self._on_error)(error)

        self.worker.submit(job, on_done=done, on_error=failed)

    def _on_error(self, error: BaseException) -> None:
        self._clear_busy()
        if isinstance(error, SessionEndedError):
            return  # the SDK's signed_out event moves us to sign-in with the reason
        if not isinstance(error, LatchkeyError):
            _log.error("unexpected error in a background call: %s", type(error).__name__)
        self._say(describe_error(error), "error")

    def _set_busy(self, text: str) -> None:
        self._pending_jobs += 1
        self.busy_text = text
        self.busy = True

    def _clear_busy(self) -> None:
        self._pending_jobs = max(0, self._pending_jobs - 1)
        if self._pending_jobs == 0:
            self.busy = False
            self.busy_text = ""

    def _say(self, text: str, kind: str = "info") -> None:
        self.notice_kind = kind
        self.notice = text

    def _reset_flows(self) -> None:
        self.step_up_prompt = False
        self.sensitive_done = False
        self.sensitive_before = ""
        self.sensitive_after = ""
        self.password_done = False

    def _update_session_facts(self) -> None:
        client = self.client
        info = client.session if client is not None else None
        if info is None:
            return
        self.auth_level = info.auth_level
        self.session_fingerprint = fingerprint(info.session_id)
        self.idle_total_seconds = info.idle_timeout_seconds
        absolute = info.absolute_expires_in_seconds
        self.absolute_text = format_countdown(absolute) if absolute is not None else "—"

    def _tick(self, _dt: float) -> None:
        """Refresh the countdowns shown on screen (reads the SDK's timer; no network)."""
        client = self.client
        if client is None or not client.is_signed_in:
            return
        self._update_idle()
        info = client.session
        if info is not None and info.absolute_expires_in_seconds is not None:
            self.absolute_text = format_countdown(info.absolute_expires_in_seconds)

    def _update_idle(self) -> None:
        client = self.client
        left = client.idle_seconds_left() if client is not None else None
        self.idle_seconds_left = left or 0.0
        self.idle_text = format_countdown(left)
        if self.idle_warning_open:
            self.idle_warning_text = format_countdown(left)
            warn = (self.settings.idle_warning_seconds if self.settings else None) or (
                default_warning_seconds(self.idle_total_seconds)
            )
            if left is not None and warn and left > warn + 0.5:
                self._close_idle_popup()  # the user touched the screen: no longer idle


_ROOT_KV = """
#:import SIGNED_IN_SCREENS latchkey_demo.app.SIGNED_IN_SCREENS
ScreenManager:
    SplashScreen:
        name: "splash"
    SignInScreen:
        name: "signin"
    RegisterScreen:
        name: "register"
    HomeScreen:
        name: "home"
    SessionsScreen:
        name: "sessions"
    SensitiveScreen:
        name: "sensitive"
    PasswordScreen:
        name: "password"
"""
