"""The HTTP API, one blueprint per area (auth, sessions, account, wellknown, ops)."""
