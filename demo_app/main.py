"""Start the Latchkey demo (``python demo_app/main.py``; buildozer runs this file too)."""

from __future__ import annotations

import os
import sys

# Run from anywhere: the demo's package sits next to this file (on a phone, too).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from latchkey_demo.app import LatchkeyDemoApp


def main() -> None:
    """Open the window (a phone-shaped one on a desktop) and run the app."""
    from kivy.utils import platform

    if platform not in ("android", "ios"):
        from kivy.core.window import Window

        Window.size = (400, 820)
    LatchkeyDemoApp().run()


if __name__ == "__main__":
    main()
