"""The proposal store: typed records (records.py), one interface (store.py), one folder per backend."""
