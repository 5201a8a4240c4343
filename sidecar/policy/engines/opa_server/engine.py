"""The OPA server engine: the decision document queried over OPA's REST Data API with httpx.

POST /v1/data/chartgate/decision/decision (https://www.openpolicyagent.org/docs/rest-api, "Get a
Document (with Input)") with `strict-builtin-errors=true`, so a builtin error fails the query
(HTTP 500) instead of leaving an expression undefined; OPA's default leaves it undefined, and a
policy that relied on that default could allow what the embedded engine denies. With
`provenance=true` the answer names the bundle revision that made the decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from sidecar.policy.engine import (
    DECISION_PACKAGE,
    DECISION_RULE,
    Decision,
    decision_from_document,
    deny,
)
from sidecar.policy.representable import unrepresentable
from sidecar.validation.strict_json import DuplicateKeyError, loads_strict

log = logging.getLogger("chartgate.policy")

ENGINE_NAME = "opa-server"
QUERY_PARAMS = {"provenance": "true", "strict-builtin-errors": "true"}
_MAX_RESPONSE_BYTES = 1024 * 1024


def _bundle_revision(body: Mapping[str, Any]) -> str | None:
    """The revision of the bundle(s) that answered, from OPA's `?provenance=true` block."""
    provenance = body.get("provenance")
    if not isinstance(provenance, Mapping):
        return None
    bundles = provenance.get("bundles")
    if isinstance(bundles, Mapping):
        revisions = sorted(
            (str(name), str(info["revision"]))
            for name, info in bundles.items()
            if isinstance(info, Mapping) and info.get("revision")
        )
        if len(revisions) == 1:
            return revisions[0][1]
        if revisions:
            return ",".join(f"{name}={revision}" for name, revision in revisions)
    legacy = provenance.get("revision")  # OPA's older single-bundle field
    return str(legacy) if legacy else None


def _error_code(response: httpx.Response) -> str:
    """The `code` of an OPA error answer (e.g. `internal_error`), or "" when it has none."""
    try:
        body = loads_strict(response.content[:_MAX_RESPONSE_BYTES])
    except ValueError:
        return ""
    code = body.get("code") if isinstance(body, Mapping) else None
    return code if isinstance(code, str) else ""


class OpaServerEngine:
    """PolicyEngine on an OPA server (`opa run --server`) loaded with the same library.

    Fails closed: a timeout denies with `policy.engine_timeout`, a refused connection or an HTTP
    error (a strict builtin error is HTTP 500) with `policy.engine_unavailable`, an answer
    without `result` (undefined, e.g. the library is not loaded) with `policy.undefined`. No
    retries, so a timeout denies within `timeout_seconds`. The revision is OPA's bundle
    revision when the policy came as a bundle, else `opa:<url>`.
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 0.5,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA URL must be http(s)://host[:port], not {url!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"OPA URL must not have a path (/v1/data is added): {url!r}")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._url = url.rstrip("/")
        self._endpoint = f"{self._url}/v1/data/{DECISION_PACKAGE.replace('.', '/')}/{DECISION_RULE}"
        self._timeout = timeout_seconds
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(timeout=timeout_seconds, headers=headers, transport=transport)
        self._revision = f"opa:{self._url}"

    @property
    def name(self) -> str:
        return ENGINE_NAME

    @property
    def revision(self) -> str:
        """The revision of the last answer (OPA may load a new bundle at any time)."""
        return self._revision

    def close(self) -> None:
        self._http.close()

    def _deny(self, code: str, message: str, revision: str) -> Decision:
        return deny(code, message, revision=revision, engine=ENGINE_NAME)

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        revision = self._revision
        problem = unrepresentable(policy_input)
        if problem is not None:
            return self._deny(
                "policy.input_unrepresentable",
                f"the policy input holds {problem}; denying",
                revision,
            )
        try:
            body = json.dumps({"input": policy_input}, allow_nan=False).encode("utf-8")
            response = self._http.post(self._endpoint, params=QUERY_PARAMS, content=body)
        except httpx.TimeoutException:
            log.error("OPA at %s did not answer within %s s", self._url, self._timeout)
            return self._deny(
                "policy.engine_timeout",
                f"the OPA policy engine did not answer within {self._timeout:g} s; denying",
                revision,
            )
        except httpx.HTTPError as exc:
            log.error("OPA at %s unreachable: %s", self._url, type(exc).__name__)
            return self._deny(
                "policy.engine_unavailable",
                f"the OPA policy engine is unreachable ({type(exc).__name__}); denying",
                revision,
            )
        except (TypeError, ValueError) as exc:
            return self._deny(
                "policy.engine_error",
                f"the policy input is not representable as JSON ({type(exc).__name__}); denying",
                revision,
            )
        if response.status_code != 200:
            log.error("OPA at %s answered HTTP %s", self._url, response.status_code)
            if response.status_code == 500 and _error_code(response) == "internal_error":
                # What OPA answers when evaluation fails, a strict builtin error included.
                return self._deny(
                    "policy.engine_error",
                    "policy evaluation failed in the OPA server (HTTP 500 internal_error); denying",
                    revision,
                )
            return self._deny(
                "policy.engine_unavailable",
                f"the OPA policy engine answered HTTP {response.status_code}; denying",
                revision,
            )
        if len(response.content) > _MAX_RESPONSE_BYTES:
            return self._deny(
                "policy.engine_error", "the OPA policy engine answered too much; denying", revision
            )
        try:
            answer = loads_strict(response.content)
        except (ValueError, DuplicateKeyError):
            return self._deny(
                "policy.engine_error",
                "the OPA policy engine answered something other than one JSON object; denying",
                revision,
            )
        if not isinstance(answer, Mapping):
            return self._deny(
                "policy.engine_error",
                "the OPA policy engine answered something other than a JSON object; denying",
                revision,
            )
        revision = _bundle_revision(answer) or f"opa:{self._url}"
        self._revision = revision
        if "result" not in answer:
            return self._deny(
                "policy.undefined",
                f"policy decision {DECISION_PACKAGE}.{DECISION_RULE} is undefined on OPA "
                "(is the library loaded?); denying",
                revision,
            )
        return decision_from_document(answer["result"], revision=revision, engine=ENGINE_NAME)
