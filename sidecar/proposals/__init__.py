"""Proposals: the lifecycle state machine and the pipeline that carries a proposal through it."""
