"""Chartgate adapters: the processes that own an EHR connection and perform token-covered writes."""
