"""The account example served over HTTP by a small Starlette app: see README.md here."""
