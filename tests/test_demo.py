"""`chartgate demo`, as the README runs it: a relative workdir, real processes, exit 0, a verified log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sidecar.policy.library import shipped_policy_dir

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_passes_from_a_relative_workdir(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chartgate.cli",
            "demo",
            "--workdir",
            "state",
            "--policy-dir",
            str(shipped_policy_dir()),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Demo passed" in done.stdout
    (log,) = (tmp_path / "state" / "demo").glob("run-*/audit/audit.jsonl")
    records = len(log.read_text().splitlines())
    # Every step's records (the agent's, the reviewers', expiry), all verified.
    assert records >= 35
    assert f"OK: {records} records verified" in done.stdout
