"""An OPA REST Data API server for the tests, evaluating with OPA's own Go engine in-process (opa_bindings).

It answers POST /v1/data/<path> as `opa run --server` does (https://www.openpolicyagent.org/docs/rest-api,
"Get a Document (with Input)"): `{"result": ...}`, no `result` when undefined, `provenance` when asked,
HTTP 500 with an error object when evaluation fails. The bridge always evaluates with strict builtin
errors, so the server records the query parameters it was sent and a test can check that the engine
asks for `strict-builtin-errors=true` rather than relying on a server default.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sidecar.policy.loader import load_policy


@dataclass
class OpaTestServer:
    """A running server: its URL, the policy revision it serves, the query strings it was sent."""

    url: str
    revision: str
    queries: list[dict[str, list[str]]] = field(default_factory=list)


@contextmanager
def opa_server(policy_dir: Path, extra_data: Path | None = None) -> Iterator[OpaTestServer]:
    from opa_bindings import OpaEngine, OpaError, OpaUndefinedError

    policy = load_policy(policy_dir, extra_data)
    engine = OpaEngine()
    for module in policy.modules:
        engine.add_policy(module.name, module.source)
    engine.add_data(json.loads(policy.data_json))
    lock = threading.Lock()
    state = OpaTestServer(url="", revision=policy.revision)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            state.queries.append(query)
            if not parts.path.startswith("/v1/data/"):
                self._send(404, {"code": "resource_not_found", "message": "not found"})
                return
            document = parts.path[len("/v1/data/") :].replace("/", ".")
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {"code": "invalid_parameter", "message": "body is not JSON"})
                return
            answer: dict[str, Any] = {}
            if query.get("provenance") == ["true"]:
                answer["provenance"] = {"bundles": {"chartgate": {"revision": state.revision}}}
            try:
                with lock:
                    answer["result"] = engine.eval_document(document, body.get("input"))
            except OpaUndefinedError:
                pass
            except OpaError as exc:
                self._send(500, {"code": "internal_error", "message": exc.message})
                return
            self._send(200, answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        engine.close()
