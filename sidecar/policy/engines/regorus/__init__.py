"""regorus: the embedded engine (the default)."""
