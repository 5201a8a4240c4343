"""The OPA server engine: the same decision document, queried over HTTP through opa-python-client."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient

from sidecar.policy.engine import (
    DECISION_PACKAGE,
    DECISION_RULE,
    Decision,
    decision_from_document,
    deny,
)

log = logging.getLogger("chartgate.policy")

ENGINE_NAME = "opa"


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


class OpaEngine:
    """PolicyEngine on an OPA server (`opa run --server`) loaded with the same rego/ library.

    Fails closed: a timeout denies with `policy.engine_timeout`, a refused connection or an
    HTTP error with `policy.engine_unavailable`, a response without `result` (the decision is
    undefined, e.g. the library is not loaded) with `policy.undefined`. Retries are off so a
    timeout denies within `timeout_seconds` (requests applies it to the connect and to each
    read). The revision is OPA's bundle revision when the policy came as a bundle, else
    `opa:<url>`.
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 0.5,
        package_path: str = DECISION_PACKAGE.replace(".", "/"),
        rule: str = DECISION_RULE,
        *,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA URL must be http(s)://host[:port], not {url!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"OPA URL must not have a path (the client adds /v1/data): {url!r}")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._url = url.rstrip("/")
        self._package_path = package_path
        self._rule = rule
        self._timeout = timeout_seconds
        https = parts.scheme == "https"
        self._client = OpaClient(
            host=parts.hostname,
            port=parts.port or (443 if https else 8181),
            ssl=https,
            timeout=timeout_seconds,
            retries=0,
            token=token,
        )
        self._revision = f"opa:{self._url}"

    @property
    def name(self) -> str:
        return ENGINE_NAME

    @property
    def revision(self) -> str:
        """The revision of the last answer (OPA may load a new bundle at any time)."""
        return self._revision

    def close(self) -> None:
        self._client.close_connection()

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        revision = self._revision
        try:
            body = self._client.query_rule(
                input_data=dict(policy_input),
                package_path=self._package_path,
                rule_name=self._rule,
                query_params={"provenance": "true"},
            )
        except requests.Timeout:
            log.error("OPA at %s did not answer within %s s", self._url, self._timeout)
            return deny(
                "policy.engine_timeout",
                f"the OPA policy engine did not answer within {self._timeout:g} s; denying",
                revision=revision,
                engine=ENGINE_NAME,
            )
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            log.error("OPA at %s answered HTTP %s", self._url, status)
            return deny(
                "policy.engine_unavailable",
                f"the OPA policy engine answered HTTP {status}; denying",
                revision=revision,
                engine=ENGINE_NAME,
            )
        except requests.RequestException as exc:
            log.error("OPA at %s unreachable: %s", self._url, type(exc).__name__)
            return deny(
                "policy.engine_unavailable",
                f"the OPA policy engine is unreachable ({type(exc).__name__}); denying",
                revision=revision,
                engine=ENGINE_NAME,
            )
        except Exception as exc:  # malformed JSON and anything else: fail closed
            log.exception("OPA query failed")
            return deny(
                "policy.engine_error",
                f"the OPA policy engine failed ({type(exc).__name__}); denying",
                revision=revision,
                engine=ENGINE_NAME,
            )
        if not isinstance(body, Mapping):
            return deny(
                "policy.engine_error",
                "the OPA policy engine answered something other than a JSON object; denying",
                revision=revision,
                engine=ENGINE_NAME,
            )
        revision = _bundle_revision(body) or f"opa:{self._url}"
        self._revision = revision
        if "result" not in body:
            return deny(
                "policy.undefined",
                f"policy decision {self._package_path}/{self._rule} is undefined on OPA "
                "(is the library loaded?); denying",
                revision=revision,
                engine=ENGINE_NAME,
            )
        return decision_from_document(body["result"], revision=revision, engine=ENGINE_NAME)
