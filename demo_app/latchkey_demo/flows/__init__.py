"""The demo's flows: one module, one Screen class (or popup) and one ``.kv`` file each.

A flow owns what its screen shows, as Kivy properties on its Screen class, and the handlers
its ``.kv`` calls (one call each). A flow never calls the network: it hands the App a job,
which runs on the worker and comes back on the UI thread (:meth:`LatchkeyDemoApp.run`).

=============  ==========================  ===============
module         classes                     look
=============  ==========================  ===============
``signin``     Splash, SignIn, Register    ``signin.kv``, ``register.kv``
``home``       Home                        ``home.kv``
``sessions``   Sessions, SessionCard       ``sessions.kv``
``sensitive``  Sensitive (step-up)         ``sensitive.kv``
``password``   Password                    ``password.kv``
``idle``       IdleWarningPopup            ``idle.kv``
=============  ==========================  ===============
"""

from __future__ import annotations

from .base import FlowScreen
from .home import HomeScreen
from .idle import IdleWarningPopup
from .password import PasswordScreen
from .sensitive import SensitiveScreen
from .sessions import SessionCard, SessionsScreen
from .signin import RegisterScreen, SignInScreen, SplashScreen

__all__ = [
    "KV_FILES", "FlowScreen", "HomeScreen", "IdleWarningPopup", "PasswordScreen",
    "RegisterScreen", "SensitiveScreen", "SessionCard", "SessionsScreen", "SignInScreen",
    "SplashScreen",
]

#: The flows' ``.kv`` files (in ``latchkey_demo/kv/``), loaded after ``theme.kv``.
KV_FILES = ("signin.kv", "register.kv", "home.kv", "sessions.kv", "sensitive.kv",
            "password.kv", "idle.kv")
