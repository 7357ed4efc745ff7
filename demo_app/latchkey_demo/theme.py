"""Name the demo's colours and sizes once, so every screen looks like the same app.

The ``.kv`` files import this module (``#:import T latchkey_demo.theme``) rather than
repeating RGBA literals: one palette, one spacing scale, one type scale.
"""

from __future__ import annotations

from kivy.metrics import dp, sp
from kivy.utils import get_color_from_hex as _hex

__all__ = [
    "ACCENT", "ACCENT_DARK", "ACCENT_SOFT", "BACKGROUND", "BORDER", "DANGER", "DANGER_SOFT",
    "INFO_SOFT", "INK", "INK_MUTED", "INK_SOFT", "NAV", "PAD", "RADIUS", "SHADOW", "SUCCESS",
    "SUCCESS_SOFT", "SURFACE", "WARNING", "WARNING_SOFT", "notice_colors", "pad", "size",
]

# Palette: a calm indigo brand on a cool grey page, white cards, one red for danger.
BACKGROUND = _hex("#F3F5FA")
SURFACE = _hex("#FFFFFF")
NAV = _hex("#1E1B4B")
ACCENT = _hex("#4F46E5")
ACCENT_DARK = _hex("#4338CA")
ACCENT_SOFT = _hex("#EEF2FF")
INK = _hex("#0F172A")
INK_SOFT = _hex("#334155")
INK_MUTED = _hex("#64748B")
BORDER = _hex("#E2E8F0")
DANGER = _hex("#DC2626")
DANGER_SOFT = _hex("#FEF2F2")
SUCCESS = _hex("#059669")
SUCCESS_SOFT = _hex("#ECFDF5")
WARNING = _hex("#B45309")
WARNING_SOFT = _hex("#FFFBEB")
INFO_SOFT = _hex("#EFF6FF")
SHADOW = (15 / 255, 23 / 255, 42 / 255, 0.06)

RADIUS = dp(14)
PAD = dp(16)


def pad(steps: float = 1) -> float:
    """Return a spacing on the 8 dp grid (``pad(2)`` is 16 dp)."""
    return dp(8 * steps)


_TYPE = {"display": 30, "title": 20, "heading": 17, "body": 15, "small": 13, "tiny": 11.5}


def size(name: str) -> float:
    """Return a font size of the type scale in sp."""
    return sp(_TYPE[name])


def notice_colors(kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return (background, text) colours for a notice of ``kind``."""
    return {
        "error": (DANGER_SOFT, DANGER),
        "success": (SUCCESS_SOFT, SUCCESS),
        "warning": (WARNING_SOFT, WARNING),
    }.get(kind, (INFO_SOFT, ACCENT_DARK))
