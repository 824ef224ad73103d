"""A ringstore peer: HTTP APIs, coordinator, stores and membership."""
