"""Latchkey demo: a Kivy app that shows the whole session story on a phone or a desktop.

It is also the reference for embedding the SDK in Kivy: every SDK call runs on a worker
thread (:mod:`latchkey_demo.worker`), every result and every SDK event comes back to the UI
thread through ``Clock.schedule_once`` / ``@mainthread``, and the mobile life-cycle policy
(idle warning, sign-out after a long pause) lives in the ``App`` (:mod:`latchkey_demo.app`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
