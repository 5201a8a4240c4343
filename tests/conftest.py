"""Shared fixtures: real processes on loopback, each test module with a fresh workdir of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chartgate.demo import demo_sidecar_config
from chartgate.stack import Stack, start_stack
from sidecar.policy.library import shipped_policy_dir
from tests.support import seed_patient

REPO = Path(__file__).resolve().parent.parent
REGO = shipped_policy_dir()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """FHIR store + adapter + sidecar with the shipped policy and the demo tenant's settings."""
    workdir = tmp_path_factory.mktemp("stack")
    running = start_stack(workdir, demo_sidecar_config(workdir, REGO))
    seed_patient(running.fhir_base, "demo-patient-1")
    seed_patient(running.fhir_base, "demo-patient-2")
    yield running
    running.stop()
