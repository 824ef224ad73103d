"""The Python client library of ringstore (see docs/client.md)."""
