"""Reconciliation: read a written resource back and compare it with what was intended (issue 12)."""
