"""Chartgate sidecar: the policy enforcement point that sits beside one agent."""
