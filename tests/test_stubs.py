"""The committed gRPC stubs are exactly what scripts/gen_proto.py makes from proto/."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_generated_stubs_match_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_drift_is_detected(tmp_path: Path) -> None:
    """The check must fail when a stub differs: copy the repo's proto and stubs, change a stub."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "proto", copy / "proto")
    shutil.copytree(REPO / "chartgate" / "v1", copy / "chartgate" / "v1")
    shutil.copytree(REPO / "scripts", copy / "scripts")
    stub = copy / "chartgate" / "v1" / "gateway_pb2.pyi"
    stub.write_text(stub.read_text() + "\n# drift\n")
    result = subprocess.run(
        [sys.executable, str(copy / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "gateway_pb2.pyi" in result.stderr
