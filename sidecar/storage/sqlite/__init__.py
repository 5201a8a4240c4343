"""SQLite backend of the proposal store."""
