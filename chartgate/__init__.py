"""Chartgate: the contract shared by the sidecar and the adapters (API stubs, canonical JSON, keys)."""
