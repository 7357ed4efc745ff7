"""The HTTP API, one blueprint per area (auth, account, wellknown, ops)."""
