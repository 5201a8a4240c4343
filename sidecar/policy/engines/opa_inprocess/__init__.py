"""OPA's Go engine in-process: the parity reference, and an optional serving engine."""
