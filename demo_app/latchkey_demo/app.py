"""The demo ``App``: navigation, life cycle and plumbing; the flows live in :mod:`.flows`.

Each flow (sign in and register, home, devices, step-up, password, idle) owns its screen's
state on its Screen class and its look in ``kv/<flow>.kv``; the screens sit in
``kv/root.kv``. What stays here is what every flow shares:

- navigation (:meth:`LatchkeyDemoApp.go`) and the one message line (:meth:`~.say`);
- the life cycle: ``on_start`` restores a stored session (or says the store is locked),
  ``on_stop`` stops timers and the worker, and ``on_pause`` / ``on_resume`` hand the
  mobile life-cycle policy to the SDK's ``client.on_pause`` / ``client.on_resume``
  (coming back after the idle limit means signed out, a due token is refreshed first);
- the plumbing: the SDK client of the current sign-in, the worker its calls run on
  (:meth:`~.run`: a flow hands over a job and gets its outcome back on the UI thread), and
  the SDK's events (``signed_out`` with a reason, ``idle_warning``), which arrive on SDK
  threads and hop to the UI thread with ``@mainthread``.

Platform decisions (server URL, storage, device identity, the boot clock) are
:mod:`.platform_setup`'s; the App makes one call to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock, mainthread
from kivy.core.window import Window
from kivy.lang import Builder
from kivy.properties import BooleanProperty, ObjectProperty, OptionProperty, StringProperty
from kivy.uix.screenmanager import FadeTransition, ScreenManager
from latchkey_client import (
    AuthEvent,
    EventName,
    LatchkeyClient,
    LatchkeyError,
    NetworkError,
    SessionEndedError,
    SignOutReason,
    Storage,
    install_redaction,
)
from latchkey_client.idle import default_warning_seconds

from . import platform_setup
from .flows import KV_FILES, FlowScreen, IdleWarningPopup
from .wording import (
    OFFLINE_KEPT,
    STORAGE_LOCKED_AT_START,
    STORAGE_LOCKED_SIGNED_IN,
    describe_error,
    device_key_status,
    fingerprint,
    sign_out_message,
)
from .worker import Worker

__all__ = ["LatchkeyDemoApp"]

_log = logging.getLogger("latchkey_demo")

KV_DIR = Path(__file__).parent / "kv"


class LatchkeyDemoApp(App):
    """Sign in, see the session, manage devices, step up, change password, sign out."""

    title = "Latchkey"

    #: The screen on show; the ScreenManager follows it.
    screen = StringProperty("splash")
    #: A network call is under way: spinners turn, submit buttons are disabled.
    busy = BooleanProperty(False)
    busy_text = StringProperty("")
    #: One message line on the current screen: errors, confirmations, sign-out reasons.
    notice = StringProperty("")
    notice_kind = OptionProperty("info", options=["info", "error", "success", "warning"])

    #: The SDK client of the current sign-in (``None`` before the first one).
    client = ObjectProperty(None, allownone=True)
    #: This session as every signed-in screen shows it (mirrors ``client.session``).
    auth_level = StringProperty("normal")
    session_fingerprint = StringProperty("—")
    #: "This device holds its key (<store>)" while the session is DPoP-bound.
    device_key_text = StringProperty("—")
    device_name = StringProperty("")
    #: The demo backend's origin (the Flask example), or "" when none was started.
    backend_url = StringProperty("")
    #: The idle warning while it is open (``None`` otherwise).
    idle_warning = ObjectProperty(None, allownone=True)
    #: ``client.on_resume`` is checking the session after a return from the background.
    resuming = BooleanProperty(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The clock for pause/resume and activity; tests replace it to travel in time.
        self.clock: Callable[[], float] = platform_setup.boot_clock
        self.platform: platform_setup.DemoPlatform | None = None
        self.worker: Worker | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._local_reason: SignOutReason | None = None
        self._ticker: Any = None
        self._checker: Any = None
        self._pending_jobs = 0
        self._in_background = False

    @property
    def storage(self) -> Storage | None:
        """Return the secure storage the platform gave the SDK (``None`` before ``build``)."""
        return self.platform.storage if self.platform is not None else None

    # == life cycle ==========================================================================

    def build(self) -> ScreenManager:
        """Set the platform up, load the theme and the flows' screens, start the ticker."""
        # The SDK's filter masks tokens and session ids (in URLs too) in whatever the app's
        # handlers write: the second line, since neither the app nor the SDK logs one.
        install_redaction()
        self.platform = platform_setup.prepare(Path(self.user_data_dir))
        self.device_name = self.platform.settings.device_name
        self.backend_url = self.platform.settings.backend_url
        self.worker = Worker()
        for name in ("theme.kv", *KV_FILES):
            Builder.load_file(str(KV_DIR / name))
        root = Builder.load_file(str(KV_DIR / "root.kv"))
        root.transition = FadeTransition(duration=0.15)
        root.get_screen("signin").describe_platform(self.platform)
        self.bind(screen=lambda _app, name: setattr(root, "current", name))
        Window.bind(on_touch_down=self._on_user_activity, on_key_down=self._on_user_activity)
        self._ticker = Clock.schedule_interval(self._tick, 0.25)
        return root

    def on_start(self) -> None:
        """Resume a stored session if there is one, else ask the user to sign in.

        A store still locked after a reboot is not "no session" (M2): the user is told to
        unlock the phone, and the next resume reads the session. A store that lost it (a
        backup restored onto a new phone) is a sign-out with its reason.
        """
        client = self.new_client(stay_signed_in=True)
        if not client.is_signed_in:
            self.screen = "signin"
            if client.storage_unavailable:
                self.say(STORAGE_LOCKED_AT_START, "warning")
            elif client.signed_out_reason is SignOutReason.STORAGE_LOST:
                self.show_signed_out(SignOutReason.STORAGE_LOST)
            return
        self.screen = "splash"
        self.run(client.restore, "Restoring your session…", self._on_restored,
                 on_error=self._on_restore_failed, needs_session=False)

    def _on_restored(self, info: Any) -> None:
        if info is None:
            self.screen = "signin"
            return
        self.enter_signed_in("Welcome back — your session was restored.")

    def _on_restore_failed(self, error: BaseException) -> None:
        if not isinstance(error, SessionEndedError):
            # The stored session may still be fine: the next start tries again.
            self.say(describe_error(error) + " Your saved session was kept.", "error")
        self.screen = "signin"

    def on_pause(self) -> bool:
        """Keep running in the background; let the SDK hold its timers and persist.

        ``client.on_pause`` does no network and returns at once, with every pending
        revocation in secure storage, in case the OS kills the paused app.
        """
        self._stop_session_checks()
        self._in_background = True
        if self.client is not None:
            self.client.on_pause()
        return True

    def on_resume(self) -> None:
        """Let the SDK check the session before anything else goes out.

        ``client.on_resume`` counts the time away (also asleep), signs out with reason
        ``idle`` if the limit passed (the ``signed_out`` event then shows why), refreshes
        a due token and reads a session a locked store kept from us at start. It blocks,
        so it runs on the worker. Offline, the session is kept.
        """
        self._in_background = False
        client = self.client
        if client is None:
            return
        self.resuming = True
        self.worker.submit(client.on_resume, on_done=lambda info: self._on_resumed(client, info),
                           on_error=lambda error: self._on_resume_failed(client, error))

    def _on_resume_failed(self, client: LatchkeyClient, error: BaseException) -> None:
        self.resuming = False
        self._on_quiet_error(client, error)

    def _on_resumed(self, client: LatchkeyClient, info: Any) -> None:
        self.resuming = False
        if client is not self.client or info is None or self._in_background:
            # Signed out (the event explains it), never signed in, or paused again
            # before this check came back: the next resume checks again.
            return
        if self.screen != "home":
            self.enter_signed_in("Welcome back — your session was restored.")
            return
        if client.storage_unavailable:
            self.say(STORAGE_LOCKED_SIGNED_IN, "warning")
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

    # == navigation ==========================================================================

    def go(self, name: str) -> None:
        """Show another screen; it loads what it displays."""
        self.say("", "info")
        self.screen = name
        screen = self.root.get_screen(name)
        if isinstance(screen, FlowScreen):
            screen.opened()

    def say(self, text: str, kind: str = "info") -> None:
        """Show one message on the current screen (``""`` hides it)."""
        self.notice_kind = kind
        self.notice = text

    def dismiss_notice(self) -> None:
        """Hide the message line."""
        self.notice = ""

    # == signing in and out ==================================================================

    def enter_signed_in(self, message: str) -> None:
        """Show Home for a session that has just begun (signed in, registered, restored)."""
        self._local_reason = None
        self._reset_flows()
        self.update_session_facts()  # show the countdowns at once, not after the next tick
        self.screen = "home"
        self.say(message, "success")
        self._start_session_checks()
        self.root.get_screen("home").load()

    def logout(self) -> None:
        """Sign out of this session: the screen changes now, the server call follows."""
        client = self.client
        if client is None:
            self.screen = "signin"
            return
        self._local_reason = SignOutReason.USER
        self.show_signed_out(SignOutReason.USER)
        self.worker.submit(client.logout, on_done=self._on_logged_out,
                           on_error=lambda _e: None)

    def _on_logged_out(self, result: Any) -> None:
        if getattr(result, "pending", False) and self.screen == "signin":
            self.say("You signed out on this device. The server could not be reached; "
                     "the sign-out will be sent again when it can be.", "warning")

    def expect_sign_out(self, reason: SignOutReason) -> None:
        """Name the reason of a sign-out the app itself is about to cause."""
        self._local_reason = reason

    @mainthread
    def _on_sdk_signed_out(self, event: AuthEvent, client: LatchkeyClient) -> None:
        if client is not self.client:
            return  # an older client's goodbye; a new sign-in has happened since
        self.show_signed_out(self._local_reason or event.reason or SignOutReason.REVOKED)

    def show_signed_out(self, reason: SignOutReason, message: str | None = None) -> None:
        """Show sign-in with the reason the session ended; forget what the flows showed."""
        self._stop_session_checks()
        self._close_idle_warning()
        self._pending_jobs = 0
        self.busy = False
        self.busy_text = ""
        self._reset_flows()
        self.session_fingerprint = "—"
        self.device_key_text = "—"
        self.root.get_screen("signin").signed_out_reason = reason.value
        self.screen = "signin"
        kind = "info" if reason is SignOutReason.USER else "warning"
        self.say(message or sign_out_message(reason), kind)

    def _reset_flows(self) -> None:
        for screen in self.root.screens:
            if isinstance(screen, FlowScreen):
                screen.reset()

    # == session checks and the idle warning =================================================

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
                           on_done=lambda _me: self.update_session_facts(),
                           on_error=lambda error: self._on_quiet_error(client, error))

    @mainthread
    def _on_storage_locked(self, client: LatchkeyClient) -> None:
        if client is self.client and client.is_signed_in:
            self.say(STORAGE_LOCKED_SIGNED_IN, "warning")

    def _on_quiet_error(self, client: LatchkeyClient, error: BaseException) -> None:
        if client is not self.client:
            # A check by a client replaced since (a restart of the app closed it under the
            # request): what it met says nothing about the session shown now.
            _log.info("a replaced client's check ended: %s", type(error).__name__)
            return
        if isinstance(error, SessionEndedError):
            return  # the signed_out event explains it
        if isinstance(error, NetworkError):
            self.say(OFFLINE_KEPT, "warning")
            return
        if isinstance(error, LatchkeyError):
            _log.info("session check failed: %s", type(error).__name__)
            return
        _log.error("session check failed unexpectedly: %s", type(error).__name__)

    def _start_session_checks(self) -> None:
        self._stop_session_checks()
        seconds = self.platform.settings.session_check_seconds if self.platform else 0
        if seconds > 0:
            self._checker = Clock.schedule_interval(lambda _dt: self.check_session(), seconds)

    def _stop_session_checks(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            self._checker = None

    def stay_signed_in(self) -> None:
        """Answer the idle warning: count as activity, and tell the server we are here."""
        if self.client is not None:
            self.client.touch()
        self._close_idle_warning()
        self.check_session()

    @mainthread
    def _on_sdk_idle_warning(self, _event: AuthEvent, client: LatchkeyClient) -> None:
        if client is not self.client or not client.is_signed_in:
            return
        if self.idle_warning is None:
            configured = self.platform.settings.idle_warning_seconds if self.platform else None
            total = client.session.idle_timeout_seconds if client.session is not None else 0
            popup = IdleWarningPopup(
                warning_seconds=configured or default_warning_seconds(total) or 0)
            popup.open()
            self.idle_warning = popup
        self._show_countdowns()

    def _close_idle_warning(self) -> None:
        popup, self.idle_warning = self.idle_warning, None
        if popup is not None:
            popup.dismiss()

    def _on_user_activity(self, *_args: Any) -> bool:
        """Count taps and key presses as activity (L6); never consume the event."""
        if self.client is not None and self.client.is_signed_in:
            self.client.touch()
            return False

    def _tick(self, _dt: float) -> None:
        """Refresh the countdowns shown on screen (reads the SDK's timer; no network)."""
        if self.client is not None and self.client.is_signed_in:
            self._show_countdowns()

    def _show_countdowns(self) -> None:
        left = self.root.get_screen("home").show_countdowns(self.client)
        if self.idle_warning is not None and not self.idle_warning.show_left(left):
            self._close_idle_warning()  # the user touched the screen: no longer idle

    # == plumbing ============================================================================

    def new_client(self, *, stay_signed_in: bool) -> LatchkeyClient:
        """Replace the SDK client (a sign-in decides whether the refresh token persists)."""
        old = self.client
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if old is not None:
            old.close()
        assert self.platform is not None
        settings = self.platform.settings
        client = LatchkeyClient(
            base_url=settings.server_url,
            # The demo backend checks the session itself: the token may go there too (R4).
            api_origins=[settings.backend_url] if settings.backend_url else [],
            storage=self.platform.storage,
            stay_signed_in=stay_signed_in,
            idle_warning_seconds=settings.idle_warning_seconds,
            device_id=self.platform.device_id,
            device_name=settings.device_name,
            user_agent=settings.user_agent,
            # The app's clock (a boot clock: it counts the phone's sleep), read at each
            # call so a test can move it; the SDK measures pauses and deadlines on it.
            clock=lambda: self.clock(),
        )
        self._unsubscribe = [
            client.on(EventName.STORAGE_UNAVAILABLE, lambda e: self._on_storage_locked(client)),
            client.on(EventName.SIGNED_OUT, lambda e: self._on_sdk_signed_out(e, client)),
            client.on(EventName.IDLE_WARNING, lambda e: self._on_sdk_idle_warning(e, client)),
        ]
        self.client = client
        return client

    def run(self, job: Callable[[], Any], busy_text: str, on_done: Callable[[Any], Any], *,
            on_error: Callable[[BaseException], Any] | None = None,
            needs_session: bool = True) -> None:
        """Run ``job`` on the worker with a spinner; its outcome comes back on the UI thread.

        This is the one way a flow reaches the network: the UI thread never waits on it.
        Errors become messages unless ``on_error`` takes them. A job that ``needs_session``
        is not started once the session has ended; sign-in is shown instead.
        """
        if needs_session and (self.client is None or not self.client.is_signed_in):
            self.show_signed_out(SignOutReason.REVOKED)
            return
        self._set_busy(busy_text)

        def done(result: Any) -> None:
            self._clear_busy()
            on_done(result)

        def failed(error: BaseException) -> None:
            self._clear_busy()
            (on_error or self.show_error)(error)

        self.worker.submit(job, on_done=done, on_error=failed)

    def show_error(self, error: BaseException) -> None:
        """Tell the user what went wrong, in words (a session that ended explains itself)."""
        if isinstance(error, SessionEndedError):
            return  # the SDK's signed_out event moves us to sign-in with the reason
        if not isinstance(error, LatchkeyError):
            _log.error("unexpected error in a background call: %s", type(error).__name__)
        self.say(describe_error(error), "error")

    def update_session_facts(self) -> None:
        """Mirror ``client.session`` (auth level, fingerprint, countdowns) on screen."""
        client = self.client
        info = client.session if client is not None else None
        if info is None:
            return
        self.auth_level = info.auth_level
        self.session_fingerprint = fingerprint(info.session_id)
        self.device_key_text = device_key_status(info.dpop_bound, client.device_key_holder)
        self._show_countdowns()

    def _set_busy(self, text: str) -> None:
        self._pending_jobs += 1
        self.busy_text = text
        self.busy = True

    def _clear_busy(self) -> None:
        self._pending_jobs = max(0, self._pending_jobs - 1)
        if self._pending_jobs == 0:
            self.busy = False
            self.busy_text = ""
