"""The console's test site: FHIR store, adapter, sidecar, the dev OIDC issuer and the console, as processes.

The site is console/devsite.py's (what a developer runs by hand). One site serves every console
test of the session (HTTP-level and browser): starting five processes is most of the cost, and
each test proposes its own writes, so they do not interfere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from console.devsite import start_devsite
from tests.console.support import PATIENT, Site
from tests.support import seed_patient


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = start_devsite(tmp_path_factory.mktemp("console"))
    try:
        seed_patient(running.stack.fhir_base, PATIENT)
        yield Site(running.stack, running.issuer_url, running.console_url)
    finally:
        running.stop()
