"""Hot reload: watch the policy directory and swap in a new revision only if it compiles."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Decision, deny
from sidecar.policy.loader import PolicyLoadError, compute_revision

log = logging.getLogger("chartgate.policy")


class ReloadingEngine:
    """The last good embedded engine; a broken edit is refused loudly and the old one stays.

    With no good revision at all (a broken policy at start-up), every decision denies with a
    reason naming the load error, until a fixed policy appears.
    """

    name = "embedded"

    def __init__(
        self, policy_dir: Path, extra_data: Path | None = None, poll_seconds: float = 1.0
    ) -> None:
        self._dir = policy_dir
        self._extra = extra_data
        self._engine: EmbeddedEngine | None = None
        self.last_error: str | None = None
        self._seen = ""
        self._try_load()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(poll_seconds,), daemon=True)
        self._thread.start()

    @property
    def revision(self) -> str:
        return self._engine.revision if self._engine else "none"

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        engine = self._engine
        if engine is None:
            return deny(
                "policy.unavailable",
                f"no policy revision compiles; denying: {self.last_error}",
                revision="none",
                engine=self.name,
            )
        return engine.evaluate(policy_input)

    def close(self) -> None:
        self._stop.set()

    def _try_load(self) -> None:
        try:
            self._seen = compute_revision(self._dir, self._extra)
            engine = EmbeddedEngine(self._dir, self._extra)
        except (PolicyLoadError, OSError) as exc:
            self.last_error = str(exc)
            log.error("policy in %s refused, keeping revision %s: %s", self._dir, self.revision, exc)
            return
        self._engine = engine
        self.last_error = None
        log.info("policy revision %s in force", engine.revision)

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            try:
                current = compute_revision(self._dir, self._extra)
            except (PolicyLoadError, OSError) as exc:
                log.error("cannot read policy directory %s: %s", self._dir, exc)
                continue
            if current != self._seen:
                self._try_load()
