"""Generated protobuf and gRPC stubs for chartgate.v1 (scripts/gen_proto.py; do not edit)."""
