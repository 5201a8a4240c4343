"""Parity: the corpus decides as expected on every engine; generated variations decide alike on regorus and OPA.

OPA's own engine (opa-golib-python-bindings) runs in-process in the default test run: no skip for
want of OPA. `CHARTGATE_PARITY_VARIATIONS` (default 60 per corpus case, about 3,000 in all) sets
how many variations of each case are generated; CI's default is the figure above.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from sidecar.policy.engine import Decision, PolicyEngine
from tests.policy.engines import BACKENDS, make_engine
from tests.policy.support import REGO, corpus
from tests.policy.variations import variations

CASES = corpus()
PER_CASE = int(os.environ.get("CHARTGATE_PARITY_VARIATIONS", "60"))


def test_the_corpus_covers_every_module() -> None:
    assert len(CASES) >= 30
    codes = {code for case in CASES for code in case["expect"]["codes"]}
    for prefix in ("consent.", "scope.", "fields.", "switch.", "tier.", "input."):
        assert any(c.startswith(prefix) for c in codes), prefix
    allowed = {case["expect"]["tier"] for case in CASES if case["expect"]["allow"]}
    assert allowed == {"autonomous", "approval", "dual_approval"}
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))


class Engines:
    """One engine of one kind per distinct operator data file, made on first use."""

    def __init__(self, kind: str, tmp: Path, stack: ExitStack) -> None:
        self._kind, self._tmp, self._stack = kind, tmp, stack
        self._engines: dict[str, PolicyEngine] = {}

    def for_case(self, case: dict[str, Any]) -> PolicyEngine:
        key = json.dumps(case.get("data"), sort_keys=True)
        if key not in self._engines:
            extra = None
            if case.get("data") is not None:
                extra = self._tmp / f"{self._kind}-data-{len(self._engines)}.json"
                extra.write_text(key)
            self._engines[key] = self._stack.enter_context(make_engine(self._kind, REGO, extra))
        return self._engines[key]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engines]]:
    tmp = tmp_path_factory.mktemp("parity")
    with ExitStack() as stack:
        yield {kind: Engines(kind, tmp, stack) for kind in BACKENDS}


def check(case: dict[str, Any], decision: Decision) -> None:
    expect = case["expect"]
    got = {
        "allow": decision.allow,
        "tier": decision.tier.value,
        "codes": sorted(r.code for r in decision.reasons),
    }
    assert got == {"allow": expect["allow"], "tier": expect["tier"], "codes": expect["codes"]}
    if "obligations" in expect:
        assert dict(decision.obligations) == expect["obligations"]
    assert all(r.rule.startswith("chartgate.") for r in decision.reasons)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_corpus(engines: dict[str, Engines], kind: str, case: dict[str, Any]) -> None:
    check(case, engines[kind].for_case(case).evaluate(case["input"]))


def comparable(decision: Decision) -> tuple[Any, ...]:
    """Everything a decision says but the engine's name and revision string. An engine error's
    message quotes the engine's own wording of the error, so only its code is compared."""
    return (
        decision.allow,
        decision.tier,
        tuple(
            (r.code, "" if r.code == "policy.engine_error" else r.message, r.rule)
            for r in decision.reasons
        ),
        json.dumps(dict(decision.obligations), sort_keys=True),
    )


def test_generated_variations_decide_identically_on_regorus_and_opa(
    engines: dict[str, Engines],
) -> None:
    rng = random.Random(20261130)
    compared = 0
    differences: list[str] = []
    outcomes: set[tuple[bool, str]] = set()
    codes: set[str] = set()
    for case in CASES:
        embedded, reference = engines["regorus"].for_case(case), engines["opa"].for_case(case)
        for variant in variations(case["input"], rng, PER_CASE):
            ours, theirs = embedded.evaluate(variant), reference.evaluate(variant)
            compared += 1
            outcomes.add((ours.allow, ours.tier.value))
            codes.update(r.code for r in ours.reasons)
            if comparable(ours) != comparable(theirs):
                differences.append(
                    f"{case['name']}: regorus {comparable(ours)[:3]} vs opa {comparable(theirs)[:3]}"
                    f" on {json.dumps(variant)[:400]}"
                )
    assert compared >= len(CASES) * PER_CASE * 0.9
    assert not differences, f"{len(differences)} of {compared} differ:\n" + "\n".join(differences[:5])
    # The variations reach denials and allowances of every kind, so agreement means something.
    assert {(True, "autonomous"), (True, "approval"), (True, "dual_approval")} <= outcomes
    assert {"input.malformed", "policy.input_unrepresentable", "consent.expired"} <= codes
    assert any(c.startswith("scope.") for c in codes)
