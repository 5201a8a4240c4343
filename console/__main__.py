"""`python -m console [--config FILE] ...`: the reviewer console without the `chartgate` entry point."""

from __future__ import annotations

from console.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
