"""`python -m chartgate.devissuer serve|token|jwks`: the development OIDC issuer's command line."""

from __future__ import annotations

import logging

from chartgate.devissuer.cli import main

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise SystemExit(main())
