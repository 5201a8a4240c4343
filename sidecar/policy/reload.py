"""Hot reload: watch the policy directory and swap in a new revision only if it compiles and its tests pass."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sidecar
from sidecar.errors import PolicyLoadError
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.engine import Decision, deny
from sidecar.policy.engines import EMBEDDED, backend
from sidecar.policy.loader import load_policy, policy_files

log = logging.getLogger("chartgate.policy")

NO_REVISION = "none"


class PolicyTestsFailed(PolicyLoadError):
    """The candidate revision compiles but its own `*_test.rego` tests do not pass."""


def run_tests_isolated(
    policy_dir: Path, timeout_seconds: float, engine: str = EMBEDDED
) -> dict[str, Any]:
    """Run the directory's policy tests in a child process and return the JSON report.

    A child, because a test is arbitrary Rego: one that recurses without end, allocates without
    bound or trips an engine defect must never take the sidecar down with it.
    """
    package_root = str(Path(sidecar.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "sidecar.policy.testing",
                "--json",
                "--engine",
                engine,
                str(policy_dir),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PolicyTestsFailed(
            f"policy tests did not finish within {timeout_seconds:g} s"
        ) from exc
    lines = child.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict):
        detail = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise PolicyTestsFailed(f"policy tests crashed ({detail})")
    return report


def _test_failure_message(report: Mapping[str, Any]) -> str:
    if report.get("load_error"):
        return str(report["load_error"])
    failures = [r for r in report.get("results", []) if not r.get("passed")]
    shown = "; ".join(f"{r.get('name')} ({r.get('file')}): {r.get('detail')}" for r in failures[:5])
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    return f"{len(failures)} policy test(s) failed: {shown}{more}"


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A reload's outcome: the revision in force now, the one before, and whether the candidate
    loaded (False: refused, the previous revision stays)."""

    revision: str
    previous: str
    loaded: bool


class ReloadingEngine:
    """PolicyEngine serving the last good revision of a policy directory.

    A daemon thread polls file sizes and mtimes (every `poll_seconds`). A changed directory is
    loaded, its tests run (in a child process), and it is compiled; only then is it swapped in.
    A broken edit is logged with logging.error, kept in `last_error`, and the old revision keeps
    deciding. With no good revision at all (a broken policy at start-up) every decision denies
    with `policy.unavailable` until a fixed policy appears.
    """

    def __init__(
        self,
        policy_dir: Path,
        extra_data: Path | None = None,
        *,
        poll_seconds: float = 1.0,
        run_tests: bool = True,
        test_timeout_seconds: float = 120.0,
        engine: str = EMBEDDED,
        on_change: Callable[[PolicyChange], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._dir = policy_dir
        self._extra = extra_data
        self._run_tests = run_tests
        self._test_timeout = test_timeout_seconds
        self._engine_name = engine
        self._engine: EmbeddedEngine | None = None
        self._reload_lock = threading.Lock()
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.reload_now()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(poll_seconds,), name="policy-reload", daemon=True
        )
        self._thread.start()

    @property
    def name(self) -> str:
        return self._engine_name

    @property
    def revision(self) -> str:
        engine = self._engine
        return engine.revision if engine is not None else NO_REVISION

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        engine = self._engine  # one read: a swap mid-call cannot mix two revisions
        if engine is None:
            return deny(
                "policy.unavailable",
                f"no policy revision has loaded, so every write is denied: {self.last_error}",
                revision=NO_REVISION,
                engine=self._engine_name,
            )
        return engine.evaluate(policy_input)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        """Sizes and mtimes of every policy file: a cheap change check every second."""
        paths = policy_files(self._dir) if self._dir.is_dir() else []
        if self._extra is not None:
            paths.append(self._extra)
        entries: list[tuple[str, int, int]] = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue  # deleted between listing and stat: the next poll sees it
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def reload_now(self) -> bool:
        """Check the directory now; True when a new revision went into force."""
        with self._reload_lock:
            fingerprint = self._stat()
            if fingerprint == self._fingerprint:
                return False
            try:
                candidate = self._build_candidate()
            except PolicyLoadError as exc:
                self._fingerprint = fingerprint
                self.last_error = str(exc)
                log.error(
                    "policy in %s refused; revision %s stays in force: %s",
                    self._dir,
                    self.revision,
                    exc,
                )
                self._report(PolicyChange(self.revision, self.revision, loaded=False))
                return False
            if candidate is None:
                return False  # files changed while being tested: look again next poll
            self._fingerprint = fingerprint
            self.last_error = None
            if self._engine is not None and candidate.revision == self._engine.revision:
                return False  # touched, not changed
            previous = self._engine
            self._engine = candidate
            self.reloads += 1
            if previous is None:
                log.info("policy revision %s in force", candidate.revision)
            else:  # a policy change while serving: worth seeing in any log
                log.warning(
                    "policy revision %s in force (was %s)", candidate.revision, previous.revision
                )
            self._report(
                PolicyChange(candidate.revision, previous.revision if previous else "", loaded=True)
            )
            return True

    def _report(self, change: PolicyChange) -> None:
        """Tell the owner (the audit log): a reload is an administrative act worth a record."""
        if self._on_change is None:
            return
        try:
            self._on_change(change)
        except Exception:  # a record that fails must not stop the policy from serving
            log.exception("could not record a policy change")

    def _build_candidate(self) -> EmbeddedEngine | None:
        policy = load_policy(self._dir, self._extra)  # static checks first: cheap, and clear
        if self._run_tests:
            report = run_tests_isolated(self._dir, self._test_timeout, self._engine_name)
            if report.get("load_error") or any(
                not r.get("passed") for r in report.get("results", [])
            ):
                raise PolicyTestsFailed(_test_failure_message(report))
            if report.get("revision") != policy.library_revision:
                return None  # the tests ran on other bytes than the ones loaded
        return EmbeddedEngine(
            self._dir, self._extra, backend=backend(self._engine_name), policy=policy
        )

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            try:
                self.reload_now()
            except Exception:  # the watcher must outlive any surprise; the old revision stays
                log.exception("policy reload check failed")
                time.sleep(poll_seconds)
