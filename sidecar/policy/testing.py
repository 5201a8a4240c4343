"""`chartgate policy test`: run the `test_*` rules of the `*_test.rego` files on an in-process engine."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sidecar.errors import PolicyEvaluationError, PolicyLoadError, PolicyUndefined
from sidecar.policy.engines import EMBEDDED, IN_PROCESS_BACKENDS, backend
from sidecar.policy.loader import PolicyModule, load_policy

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
# A test is a rule whose head starts a line: `test_name if {`, `test_name := ...`, `test_name {`.
_TEST_HEAD = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class PolicyTestResult:
    """One `test_*` rule: it passes iff it evaluates to exactly `true`."""

    name: str  # package.rule
    file: str
    passed: bool
    detail: str = ""
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PolicyTestReport:
    """Every test of a policy directory, or the load error that kept them from running."""

    results: tuple[PolicyTestResult, ...] = ()
    load_error: str | None = None
    revision: str = ""
    duration_ms: float = field(default=0.0)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed) + (1 if self.load_error else 0)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def failures(self) -> list[PolicyTestResult]:
        return [r for r in self.results if not r.passed]


def discover_tests(modules: tuple[PolicyModule, ...]) -> list[tuple[str, str, str]]:
    """(rule path, dotted name, file) of every `test_*` rule in the test modules, in file order."""
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for module in modules:
        if not module.is_test:
            continue
        package = _PACKAGE.search(module.source)
        if package is None:
            continue
        for match in _TEST_HEAD.finditer(module.source):
            dotted = f"{package.group(1)}.{match.group(1)}"
            if dotted in seen:
                continue  # a rule defined in several bodies is one test
            seen.add(dotted)
            found.append((dotted, dotted, module.name))
    return found


def run_policy_tests(policy_dir: Path, engine: str = EMBEDDED) -> PolicyTestReport:
    """Compile the policy with its tests and evaluate every `test_*` rule on one engine.

    Tests see the library's own data (data.json), never an operator's file: they test the
    policy, not one deployment's settings. They run without input, as under `opa test`. An
    error or an undefined result fails the test.
    """
    started = time.perf_counter()
    try:
        policy = load_policy(policy_dir, include_tests=True)
        tests = discover_tests(policy.modules)
        compiled = backend(engine).compile(policy)
    except PolicyLoadError as exc:
        return PolicyTestReport(load_error=str(exc), duration_ms=_ms_since(started))
    results: list[PolicyTestResult] = []
    for path, name, file in tests:
        began = time.perf_counter()
        try:
            value = compiled.query(path, None)
            passed, detail = (
                value is True,
                "" if value is True else f"evaluated to {json.dumps(value, default=str)[:200]}",
            )
        except PolicyUndefined:
            passed, detail = False, "undefined"
        except PolicyEvaluationError as exc:
            passed, detail = False, f"error: {exc}"
        except Exception as exc:  # a test must fail, not stop the run
            passed, detail = False, f"error: {type(exc).__name__}"
        results.append(PolicyTestResult(name, file, passed, detail, _ms_since(began)))
    return PolicyTestReport(
        results=tuple(results), revision=policy.revision, duration_ms=_ms_since(started)
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


EXIT_NO_TESTS = 5  # as pytest: a run that selects nothing must not pass as green


def policy_test_command(policy_dir: Path, engine: str = EMBEDDED) -> int:
    """Print one line per failing test and a summary; 0 when every test passes, 1 when one fails
    or the policy does not load, 5 when there is no test to run."""
    report = run_policy_tests(policy_dir, engine)
    if report.load_error:
        print(f"FAIL policy load ({policy_dir}): {report.load_error}")
    for result in report.failures():
        print(f"FAIL {result.name} ({result.file}): {result.detail}")
    print(f"{report.passed} passed, {report.failed} failed ({engine})")
    if not report.results and not report.load_error:
        print(f"FAIL no test_* rules in {policy_dir}/**/*_test.rego")
        return EXIT_NO_TESTS
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m sidecar.policy.testing DIR [--engine E] [--json]`: the hot reloader runs a
    candidate's tests this way, in a child process, so a test that crashes or exhausts the engine
    cannot take the sidecar down with it."""
    parser = argparse.ArgumentParser(prog="python -m sidecar.policy.testing")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--engine", choices=IN_PROCESS_BACKENDS, default=EMBEDDED)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.json:
        return policy_test_command(args.dir, args.engine)
    report = run_policy_tests(args.dir, args.engine)
    print(json.dumps(asdict(report)))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
