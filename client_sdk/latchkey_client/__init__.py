"""Latchkey client SDK (placeholder until the SDK issue lands; see docs/SDK.md)."""

__all__: list[str] = []
