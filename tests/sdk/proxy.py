"""The SDK tests' lossy proxy: the shared one in ``tests/netproxy.py``, under its old name."""

from tests.netproxy import LoopbackProxy, Seen

__all__ = ["LoopbackProxy", "Seen"]
