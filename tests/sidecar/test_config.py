"""Sidecar config files: relative path settings mean the config file's directory."""

from __future__ import annotations

import json
from pathlib import Path

from sidecar.config import SidecarConfig


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "sidecar.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps(
            {
                "agent_id": "a",
                "tenant_id": "t",
                "policy_dir": "rego",
                "consents_file": "../consents.json",
                "shadow_policy_dir": "/abs/candidate",
            }
        )
    )
    loaded = SidecarConfig.load(config)
    assert loaded.policy_dir == tmp_path / "etc" / "rego"
    assert loaded.consents_file == tmp_path / "etc" / "../consents.json"
    assert loaded.shadow_policy_dir == Path("/abs/candidate")
    assert loaded.policy_data is None
