"""The HTTP API, one blueprint per area (auth, sessions, account,
admin_sessions, wellknown, ops)."""
