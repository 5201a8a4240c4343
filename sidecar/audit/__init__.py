"""The signed, hash-chained audit log (RFC 8785 canonical JSON Lines, RFC 8032 Ed25519) and its verifier."""
