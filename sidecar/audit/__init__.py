"""The signed audit log: RFC 8785 JSON Lines, RFC 8032 signatures, RFC 9162 Merkle checkpoints (C2SP), tools."""
