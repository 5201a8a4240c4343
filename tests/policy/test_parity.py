"""The parity corpus (tests/policy/corpus/*.json) on every engine available: embedded always, OPA when present."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opa_client import OpaClient

from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Decision
from sidecar.policy.loader import merge_data
from sidecar.policy.opa import OpaEngine
from tests.policy.opa_server import NO_OPA, opa_available, opa_server
from tests.policy.support import REGO, corpus

CASES = corpus()
LIBRARY_CONFIG = json.loads((REGO / "data.json").read_text())["chartgate_config"]


def test_the_corpus_covers_every_module() -> None:
    assert len(CASES) >= 30
    codes = {code for case in CASES for code in case["expect"]["codes"]}
    for prefix in ("consent.", "scope.", "fields.", "switch.", "tier.", "input."):
        assert any(c.startswith(prefix) for c in codes), prefix
    allowed = {case["expect"]["tier"] for case in CASES if case["expect"]["allow"]}
    assert allowed == {"autonomous", "approval", "dual_approval"}
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))


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


class _Embedded:
    """One embedded engine per distinct operator data file."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._engines: dict[str, EmbeddedEngine] = {}

    def evaluate(self, case: dict[str, Any]) -> Decision:
        key = json.dumps(case.get("data"), sort_keys=True)
        if key not in self._engines:
            extra = None
            if case.get("data") is not None:
                extra = self._tmp / f"data-{len(self._engines)}.json"
                extra.write_text(key)
            self._engines[key] = EmbeddedEngine(REGO, extra, pool_size=1)
        return self._engines[key].evaluate(case["input"])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> _Embedded:
    return _Embedded(tmp_path_factory.mktemp("parity"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_embedded(embedded: _Embedded, case: dict[str, Any]) -> None:
    check(case, embedded.evaluate(case))


@pytest.fixture(scope="module")
def opa() -> Iterator[tuple[OpaEngine, OpaClient]]:
    if not opa_available():
        pytest.skip(NO_OPA)
    with opa_server(REGO) as url:
        engine = OpaEngine(url, timeout_seconds=5)
        host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
        yield engine, OpaClient(host=host, port=int(port), timeout=5)


@pytest.mark.opa
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_opa(opa: tuple[OpaEngine, OpaClient], case: dict[str, Any]) -> None:
    engine, client = opa
    # Operator settings go in the way operators push them to OPA: the whole chartgate_config.
    override = (case.get("data") or {}).get("chartgate_config", {})
    client.update_or_create_data(merge_data(LIBRARY_CONFIG, override), "chartgate_config")
    check(case, engine.evaluate(case["input"]))
