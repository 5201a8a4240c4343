"""Where the shipped Rego library lives: package data of `sidecar.policy`, the default policy directory."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_policy_dir() -> Path:
    """The `rego/` directory installed with the package (a source checkout's own in development).

    A directory on disk, not a zip member: setuptools installs package data as plain files, and the
    hot reloader and `chartgate policy test` both need to list and stat them.
    """
    return Path(str(resources.files("sidecar.policy") / "rego"))
