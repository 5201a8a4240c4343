"""The OPA server engine: fails closed on every failure, asks for strict builtin errors, names the revision."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from chartgate.stack import free_port
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Tier
from sidecar.policy.engines.opa_server.engine import OpaServerEngine as OpaEngine
from tests.policy.opa_server import opa_server
from tests.policy.support import REGO, base_input


def codes(engine: OpaEngine) -> list[str]:
    decision = engine.evaluate(base_input())
    assert not decision.allow
    assert decision.tier is Tier.BLOCKED
    return [r.code for r in decision.reasons]


def test_connection_refused_denies() -> None:
    engine = OpaEngine(f"http://127.0.0.1:{free_port()}")
    assert codes(engine) == ["policy.engine_unavailable"]
    assert engine.revision.startswith("opa:http://127.0.0.1:")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


def test_a_server_that_never_answers_times_out_within_the_timeout(silent_server: int) -> None:
    engine = OpaEngine(f"http://127.0.0.1:{silent_server}", timeout_seconds=0.3)
    started = time.monotonic()
    assert codes(engine) == ["policy.engine_timeout"]
    assert time.monotonic() - started < 1.0  # no retries stretching it


class _Answer(BaseHTTPRequestHandler):
    """Answers every POST with the class's status and body (raw bytes when `raw` is set),
    recording what was asked."""

    status: ClassVar[int] = 200
    body: ClassVar[dict[str, Any]] = {}
    raw: ClassVar[bytes | None] = None
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).seen.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        raw = type(self).raw
        payload = raw if raw is not None else json.dumps(type(self).body).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_answer() -> Iterator[tuple[str, type[_Answer]]]:
    handler = type("Handler", (_Answer,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_an_undefined_decision_denies(http_answer: tuple[str, type[_Answer]]) -> None:
    url, handler = http_answer
    handler.body = {}  # what OPA answers when the rule is undefined
    assert codes(OpaEngine(url)) == ["policy.undefined"]
    assert handler.seen[0]["path"] == (
        "/v1/data/chartgate/decision/decision?provenance=true&strict-builtin-errors=true"
    )
    assert handler.seen[0]["body"]["input"]["agent"]["id"] == "scribe-agent"


def test_an_evaluation_error_denies_as_an_engine_error(
    http_answer: tuple[str, type[_Answer]],
) -> None:
    url, handler = http_answer
    handler.status = 500
    handler.body = {"code": "internal_error", "message": "eval_conflict_error"}
    assert codes(OpaEngine(url)) == ["policy.engine_error"]


@pytest.mark.parametrize("status", [400, 401, 404, 503])
def test_other_http_errors_deny_as_unavailable(
    http_answer: tuple[str, type[_Answer]], status: int
) -> None:
    url, handler = http_answer
    handler.status = status
    handler.body = {"code": "x", "message": "no"}
    assert codes(OpaEngine(url)) == ["policy.engine_unavailable"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"result": {"allow": false}, "result": {"allow": true, "tier": "autonomous", "reasons": []}}',
        b"[1, 2]",
        b"",
    ],
    ids=["not-json", "duplicate-result", "array", "empty"],
)
def test_an_answer_that_is_not_one_json_object_denies(
    http_answer: tuple[str, type[_Answer]], raw: bytes
) -> None:
    # A duplicated `result` must never let the last one win: it denies.
    url, handler = http_answer
    handler.raw = raw
    assert codes(OpaEngine(url)) == ["policy.engine_error"]


def test_a_malformed_result_denies(http_answer: tuple[str, type[_Answer]]) -> None:
    url, handler = http_answer
    handler.body = {"result": {"allow": "yes"}}
    assert codes(OpaEngine(url)) == ["policy.malformed_decision"]


def test_the_bundle_revision_is_reported(http_answer: tuple[str, type[_Answer]]) -> None:
    url, handler = http_answer
    handler.body = {
        "result": {"allow": True, "tier": "approval", "reasons": [], "obligations": {}},
        "provenance": {"version": "1.0.0", "bundles": {"chartgate": {"revision": "git-3f2a"}}},
    }
    engine = OpaEngine(url)
    decision = engine.evaluate(base_input())
    assert decision.allow
    assert decision.revision == "git-3f2a" == engine.revision
    assert decision.engine == "opa-server"


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        OpaEngine("opa:8181")
    with pytest.raises(ValueError, match="path"):
        OpaEngine("http://127.0.0.1:8181/v1/data")


def test_the_engine_asks_opa_for_strict_builtin_errors_and_decides_like_the_embedded_one() -> None:
    # The server evaluates with OPA's own engine; what it was asked is recorded.
    embedded = EmbeddedEngine(REGO)
    with opa_server(REGO) as server:
        engine = OpaEngine(server.url, timeout_seconds=5)
        for policy_input in (base_input(), base_input(consents=[])):
            want = embedded.evaluate(policy_input)
            got = engine.evaluate(policy_input)
            assert (got.allow, got.tier, got.reasons) == (want.allow, want.tier, want.reasons)
            assert got.revision == server.revision
        assert all(q.get("strict-builtin-errors") == ["true"] for q in server.queries)
        assert len(server.queries) == 2
