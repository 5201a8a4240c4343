"""Regenerate (or, with --check, verify) the protobuf and gRPC stubs in chartgate/v1 from proto/."""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = Path("chartgate") / "v1"


def generate(out_root: Path) -> list[Path]:
    """Run protoc on every .proto under proto/, writing into out_root; returns the files written."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / OUT_PACKAGE).glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs differ")
    args = parser.parse_args()
    if not args.check:
        written = generate(ROOT)
        print("\n".join(str(p.relative_to(ROOT)) for p in written))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        drifted = [
            str(OUT_PACKAGE / f.name)
            for f in fresh
            if not (ROOT / OUT_PACKAGE / f.name).exists()
            or not filecmp.cmp(f, ROOT / OUT_PACKAGE / f.name, shallow=False)
        ]
        committed = {p.name for p in (ROOT / OUT_PACKAGE).glob("*_pb2*.py*")}
        drifted += [str(OUT_PACKAGE / n) for n in committed - {f.name for f in fresh}]
    if drifted:
        print("stubs drifted from proto/: " + ", ".join(sorted(drifted)), file=sys.stderr)
        print("run: python scripts/gen_proto.py", file=sys.stderr)
        return 1
    print("stubs match proto/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
