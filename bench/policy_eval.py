"""Benchmark: one policy decision on the shipped library, on every candidate engine, same input, same run.

regorus through EmbeddedEngine (the product path) and its parts, OPA's Go engine in-process,
rego-cpp (regopy 1.5.2, if installed), the OPA server engine against a stand-in OPA; p50/p99 in
µs with rows interleaved in rounds, then decisions/s with 1 and N threads. See bench/README.md.

    .venv/bin/python bench/policy_eval.py [--n 2000] [--threads 4] [--no-opa-server] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import regorus

from sidecar.policy.embedded import DECISION_PATH, EmbeddedEngine
from sidecar.policy.engine import Decision, decision_from_document
from sidecar.policy.engines import backend
from sidecar.policy.library import shipped_policy_dir
from sidecar.policy.loader import PolicySet, load_policy, merge_data
from tests.policy.support import base_input, corpus

TARGET_P50_US = 250.0
ROUNDS = 10
REGOPY_VERSION = "1.5.2"
REGOPY_HINT = f"not installed: pip install regopy=={REGOPY_VERSION}"
ENTRYPOINT = DECISION_PATH.replace(".", "/")  # rego-cpp names a bundle entrypoint with slashes

# A stand-in for `opa run --server`: OPA's Data API ("Get a Document (with Input)") answered by
# OPA's own Go engine through opa_bindings, in a child process so it has its own GIL as a real
# OPA would have its own process. Python's http.server is slower than OPA's Go server, so the
# row is an upper bound on what the HTTP hop costs, not a measurement of a real OPA server.
OPA_DATA_API = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opa_bindings import OpaEngine, OpaError, OpaUndefinedError

policy = json.load(sys.stdin)
engine = OpaEngine()
for name, source in policy["modules"]:
    engine.add_policy(name, source)
engine.add_data(policy["data"])
PREFIX = "/v1/data/"

class DataApi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OPA
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, *args):
        pass

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not path.startswith(PREFIX):
            return self.send(404, {"code": "resource_not_found"})
        answer = {"provenance": {"revision": policy["revision"]}}
        try:
            document = path[len(PREFIX):].strip("/").replace("/", ".")
            answer["result"] = engine.eval_document(document, body.get("input"))
        except OpaUndefinedError:
            pass  # OPA answers 200 without "result" for an undefined document
        except OpaError as exc:
            return self.send(500, {"code": "internal_error", "message": str(exc)})
        self.send(200, answer)

    def send(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

server = ThreadingHTTPServer(("127.0.0.1", 0), DataApi)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@dataclasses.dataclass
class Row:
    key: str
    label: str
    call: Callable[[], object]
    n: int
    samples: list[int] = dataclasses.field(default_factory=list)

    def p50_us(self) -> float:
        return statistics.median(self.samples) / 1000

    def p99_us(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000


def measure_interleaved(rows: list[Row]) -> None:
    """Warm each row up, then take its samples in ROUNDS slices, the rows taking turns."""
    for row in rows:
        for _ in range(max(5, min(200, row.n // 10))):
            row.call()
    for _ in range(ROUNDS):
        for row in rows:
            call, samples, clock = row.call, row.samples, time.perf_counter_ns
            for _ in range(max(1, row.n // ROUNDS)):
                started = clock()
                call()
                samples.append(clock() - started)


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def same_verdict(a: Decision, b: Decision) -> bool:
    return (a.allow, a.tier, sorted(r.code for r in a.reasons)) == (
        b.allow,
        b.tier,
        sorted(r.code for r in b.reasons),
    )


def verdict(d: Decision) -> str:
    return f"allow={d.allow} tier={d.tier.value} codes={','.join(r.code for r in d.reasons)}"


# -- regorus parts ---------------------------------------------------------------------------


def regorus_engine(policy: PolicySet) -> regorus.Engine:
    """A regorus Engine loaded as the backend loads one (sidecar/policy/engines/regorus/backend.py
    `_build`), through regorus's public API, so its parts can be timed one by one."""
    engine = regorus.Engine()
    engine.set_rego_v0(False)
    for module in policy.modules:
        engine.add_policy(module.name, module.source)
    engine.add_data_json(policy.data_json)
    return engine


# -- rego-cpp (regopy 1.5.2), evaluated with regopy's own API ---------------------------------


_regopy_quiet = False


class RegoCpp:
    """The shipped library on rego-cpp. regopy 1.5.2 has no `set_input_json`: `set_input_term`
    takes the input as JSON text (what `set_input_json` does in later releases)."""

    def __init__(self, policy: PolicySet) -> None:
        import regopy  # type: ignore[import-untyped]

        global _regopy_quiet
        if not _regopy_quiet:
            # Else parse errors go to stdout. Only once per process: rego-cpp aborts the
            # process when the default level is set again.
            regopy.set_default_log_level("None")
            _regopy_quiet = True
        self.revision = policy.revision
        self.interpreter = regopy.Interpreter()
        # As the old embedded engine did: a builtin error is an error, as in OPA, not undefined.
        self.interpreter.strict_built_in_errors = True
        for module in policy.serving_modules:
            self.interpreter.add_module(module.name, module.source)
        self.interpreter.add_data_json(policy.data_json)
        # `query(text)` parses and compiles the whole library on every call; a bundle built
        # once with the decision as entrypoint is how the old engine served, so both are shown.
        self.bundle = self.interpreter.build(None, [ENTRYPOINT])

    def set_input(self, policy_input: Mapping[str, Any]) -> None:
        self.interpreter.set_input_term(json.dumps(policy_input))

    def _decision(self, output: Any) -> Decision:
        if not output.ok():
            return decision_from_document(None, revision=self.revision, engine="rego-cpp")
        text = str(output)
        expressions = [] if text == "undefined" else json.loads(text).get("expressions", [])
        document = expressions[0] if expressions else None
        return decision_from_document(document, revision=self.revision, engine="rego-cpp")

    def query_text(self) -> Any:
        return self.interpreter.query(f"data.{DECISION_PATH}")

    def query_bundle(self) -> Any:
        return self.interpreter.query_bundle_entrypoint(self.bundle, ENTRYPOINT)

    def evaluate(self, policy_input: Mapping[str, Any]) -> Decision:
        self.set_input(policy_input)
        return self._decision(self.query_bundle())

    def evaluate_text_query(self, policy_input: Mapping[str, Any]) -> Decision:
        self.set_input(policy_input)
        return self._decision(self.query_text())


def corpus_disagreements(policy: PolicySet, make: Callable[[PolicySet], Any]) -> list[str]:
    """Parity-corpus cases (tests/policy/corpus) where `make(policy)` decides otherwise than
    regorus (allow, tier, reason codes); one engine pair per distinct operator data."""
    pairs: dict[str, tuple[EmbeddedEngine, Any]] = {}
    differing: list[str] = []
    for case in corpus():
        key = json.dumps(case.get("data"), sort_keys=True)
        if key not in pairs:
            data = merge_data(policy.data, case["data"]) if case.get("data") else policy.data
            variant = dataclasses.replace(policy, data=data)
            pairs[key] = (EmbeddedEngine(policy.root, policy=variant), make(variant))
        reference, other = pairs[key]
        a, b = reference.evaluate(case["input"]), other.evaluate(case["input"])
        if not same_verdict(a, b):
            differing.append(f"{case['name']}: regorus {verdict(a)}; other {verdict(b)}")
    return differing


# -- OPA server stand-in ---------------------------------------------------------------------


@contextmanager
def opa_data_api(policy: PolicySet) -> Iterator[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", OPA_DATA_API],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        modules = [[m.name, m.source] for m in policy.serving_modules]
        child.stdin.write(
            json.dumps({"modules": modules, "data": policy.data, "revision": policy.revision})
        )
        child.stdin.close()
        port = child.stdout.readline().strip()
        if not port:
            raise RuntimeError("the OPA Data API stand-in did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait()


# -- throughput ------------------------------------------------------------------------------


def throughput(
    engine: EmbeddedEngine, policy_input: Mapping[str, Any], threads: int, per_thread: int
) -> float:
    """Decisions/s with `threads` threads on one engine; each thread warms up first (regorus
    builds one Engine per thread on first use, ≈ 10 ms) so only evaluation is timed."""
    barrier = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)

    def work() -> None:
        for _ in range(20):
            engine.evaluate(policy_input)
        barrier.wait()
        for _ in range(per_thread):
            engine.evaluate(policy_input)
        done.wait()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    done.wait()
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return threads * per_thread / elapsed


# -- main ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """What one run collects, printed as a table or as JSON."""

    policy: PolicySet
    policy_input: dict[str, Any]
    rows: list[Row] = dataclasses.field(default_factory=list)
    decisions: dict[str, Decision] = dataclasses.field(default_factory=dict)
    compile_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    corpus_diffs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    scaling: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def add_regorus(run: Run, n: int) -> EmbeddedEngine:
    policy, policy_input = run.policy, run.policy_input
    started = time.perf_counter()
    embedded = EmbeddedEngine(policy.root, policy=policy)
    embedded.evaluate(policy_input)  # the calling thread builds its own Engine on first use
    run.compile_ms["regorus"] = (time.perf_counter() - started) * 1000
    reference = run.decisions["regorus"] = embedded.evaluate(policy_input)

    parts = regorus_engine(policy)
    rule = f"data.{DECISION_PATH}"
    parts.set_input(policy_input)
    document = parts.eval_rule(rule)
    split = decision_from_document(document, revision=policy.revision, engine="regorus")
    if not same_verdict(split, reference):
        run.notes.append("regorus parts decide otherwise than the product path: the split is off")

    def parse() -> Decision:
        return decision_from_document(document, revision=policy.revision, engine="regorus")

    def convert_and_evaluate() -> object:
        parts.set_input(policy_input)
        return parts.eval_rule(rule)

    run.rows += [
        Row(
            "regorus",
            "regorus: EmbeddedEngine.evaluate",
            lambda: embedded.evaluate(policy_input),
            n,
        ),
        Row(
            "regorus.input",
            "  input conversion (set_input)",
            lambda: parts.set_input(policy_input),
            n,
        ),
        Row("regorus.eval", "  evaluation (eval_rule)", lambda: parts.eval_rule(rule), n),
        Row("regorus.parse", "  decision parsing", parse, n),
        # The product path less this row is what the Python wrapper costs (per-thread engine
        # lookup, error handling, decision parsing).
        Row("regorus.engine", "  conversion + evaluation", convert_and_evaluate, n),
    ]
    return embedded


def add_opa(run: Run, n: int) -> EmbeddedEngine | None:
    policy, policy_input = run.policy, run.policy_input
    try:
        started = time.perf_counter()
        opa = EmbeddedEngine(policy.root, policy=policy, backend=backend("opa"))
        run.compile_ms["opa"] = (time.perf_counter() - started) * 1000
    except Exception as exc:  # an optional engine: say why it is missing and go on
        run.skipped["opa"] = str(exc)
        return None
    run.decisions["opa"] = opa.evaluate(policy_input)
    run.rows.append(
        Row("opa", "OPA Go in-process: EmbeddedEngine", lambda: opa.evaluate(policy_input), n)
    )
    return opa


def add_regocpp(run: Run, n: int) -> RegoCpp | None:
    policy, policy_input = run.policy, run.policy_input
    try:
        import regopy  # noqa: F401
    except ImportError:
        run.skipped["rego-cpp"] = REGOPY_HINT
        return None
    if version("regopy") != REGOPY_VERSION:
        run.notes.append(
            f"regopy {version('regopy')} installed; the design's figures are for {REGOPY_VERSION}"
        )
    started = time.perf_counter()
    rc = RegoCpp(policy)
    run.compile_ms["rego-cpp"] = (time.perf_counter() - started) * 1000
    run.decisions["rego-cpp"] = rc.evaluate(policy_input)
    run.decisions["rego-cpp query(text)"] = rc.evaluate_text_query(policy_input)
    run.rows += [
        Row("rego-cpp", "rego-cpp: bundle entrypoint, whole", lambda: rc.evaluate(policy_input), n),
        Row(
            "rego-cpp.input",
            "  input conversion (set_input_term)",
            lambda: rc.set_input(policy_input),
            n,
        ),
        Row("rego-cpp.eval", "  evaluation (query_bundle_entrypoint)", rc.query_bundle, n),
        # ≈ 25 ms a call: fewer samples, or this one row would take minutes.
        Row(
            "rego-cpp-query",
            "rego-cpp: query(text), whole",
            lambda: rc.evaluate_text_query(policy_input),
            max(ROUNDS, n // 50),
        ),
    ]
    return rc


def add_opa_server(run: Run, n: int, url: str) -> None:
    from sidecar.policy.engines.opa_server.engine import OpaServerEngine

    engine = OpaServerEngine(url, timeout_seconds=5.0)
    run.decisions["opa-server"] = engine.evaluate(run.policy_input)
    run.rows.append(
        Row(
            "opa-server",
            "OPA server engine (HTTP, stand-in)",
            lambda: engine.evaluate(run.policy_input),
            n,
        )
    )


@contextmanager
def maybe_opa_data_api(run: Run, enabled: bool) -> Iterator[str | None]:
    """The OPA Data API stand-in's URL while the block runs, or None (and why, in `skipped`)."""
    if not enabled:
        run.skipped["opa-server"] = "--no-opa-server"
        yield None
        return
    try:
        import opa_bindings  # noqa: F401
    except ImportError:
        run.skipped["opa-server"] = "the stand-in needs opa_bindings, which is not installed"
        yield None
        return
    with opa_data_api(run.policy) as url:
        yield url


def results(run: Run, threads: int) -> dict[str, Any]:
    base = next(r for r in run.rows if r.key == "regorus").p50_us()
    return {
        "policy_revision": run.policy.revision,
        # Other work on the machine moves every figure; say how busy it was.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "input": "tests/policy/support.py base_input(): vital-sign Observation draft",
        "input_json_bytes": len(json.dumps(run.policy_input)),
        "decisions": {name: verdict(d) for name, d in run.decisions.items()},
        "versions": {
            "regorus": version("gordon-to-regorus"),
            "opa_bindings": version("opa-golib-python-bindings"),
            "regopy": version("regopy"),
        },
        "compile_ms": {k: round(v, 1) for k, v in run.compile_ms.items()},
        "rows": [
            {
                "key": r.key,
                "label": r.label.strip(),
                "samples": len(r.samples),
                "p50_us": round(r.p50_us(), 1),
                "p99_us": round(r.p99_us(), 1),
                "p50_vs_regorus": round(r.p50_us() / base, 2),
            }
            for r in run.rows
        ],
        "throughput": run.scaling,
        "threads": threads,
        "target": {
            "p50_us_max": TARGET_P50_US,
            "p50_us": round(base, 1),
            "met": base <= TARGET_P50_US,
        },
        "skipped": run.skipped,
        "corpus_cases": len(corpus()),
        "corpus_disagreements": run.corpus_diffs,
        "notes": run.notes,
    }


def print_table(out: dict[str, Any]) -> None:
    print(
        f"shipped library {out['policy_revision']}; input {out['input_json_bytes']} B of JSON "
        "(base_input: a vital-sign Observation draft)"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()))
    print(f"load average at the end (1, 5, 15 min): {out['load_average']}")
    print("compiled once: " + ", ".join(f"{k} {v:.0f} ms" for k, v in out["compile_ms"].items()))
    print(f"\n{'one decision':<40}{'n':>6}{'p50 µs':>10}{'p99 µs':>10}{'p50/regorus':>13}")
    for r in out["rows"]:
        label = ("  " if r["key"].count(".") else "") + r["label"]
        print(
            f"{label:<40}{r['samples']:>6}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}"
            f"{r['p50_vs_regorus']:>12.2f}x"
        )
    for name, why in out["skipped"].items():
        print(f"{name:<40}skipped: {why}")
    print(
        f"\n{'throughput (decisions/s)':<40}{'1 thread':>10}{out['threads']:>4} threads{'scaling':>9}"
    )
    for item in out["throughput"]:
        one, many = item["one_thread_per_s"], item["n_threads_per_s"]
        print(f"{item['engine']:<40}{one:>10,.0f}{many:>12,.0f}{many / one:>8.2f}x")
    print(
        "  regorus holds the GIL while it evaluates and its Engine is thread-affine (one per\n"
        "  thread): threads add no throughput. OPA in-process releases the GIL (a pool of 2)."
    )
    print("\ndecision on the input:")
    reference = out["decisions"]["regorus"]
    for name, text in out["decisions"].items():
        same = "" if name == "regorus" else ("  (as regorus)" if text == reference else "  DIFFERS")
        print(f"  {name:<22}{text}{same}")
    for name, diffs in out["corpus_disagreements"].items():
        if not diffs:
            print(
                f"parity corpus ({out['corpus_cases']} cases): {name} decides as regorus in every case"
            )
            continue
        print(f"parity corpus: {name} decides otherwise than regorus in {len(diffs)} case(s):")
        for line in diffs:
            print(f"  {line}")
    for note in out["notes"]:
        print(f"NOTE: {note}")
    target = out["target"]
    print(
        f"\ntarget: regorus product path p50 <= {target['p50_us_max']:.0f} µs on the shipped "
        f"library: {target['p50_us']:.1f} µs, {'MET' if target['met'] else 'NOT MET'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per row")
    parser.add_argument("--threads", type=int, default=4, help="threads for the throughput run")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--no-opa-server", action="store_true", help="skip the OPA server row")
    parser.add_argument(
        "--only-regorus",
        action="store_true",
        help="measure the embedded engine alone, as the sidecar runs it: OPA's Go runtime and "
        "rego-cpp are not loaded into the process (measured, the Go runtime's threads in the same "
        "process slow regorus's figures by up to 1.8x)",
    )
    args = parser.parse_args()

    # tests/policy/support.py base_input(): the documented example, a vital-sign Observation.
    run = Run(policy=load_policy(shipped_policy_dir()), policy_input=base_input())
    regorus_path = add_regorus(run, args.n)
    opa = None if args.only_regorus else add_opa(run, args.n)
    regocpp = None if args.only_regorus else add_regocpp(run, args.n)
    if args.only_regorus:
        run.skipped.update({"opa": "--only-regorus", "rego-cpp": "--only-regorus"})
    with maybe_opa_data_api(run, not (args.no_opa_server or args.only_regorus)) as url:
        if url is not None:
            add_opa_server(run, args.n, url)
        measure_interleaved(run.rows)

    reference = run.decisions["regorus"]
    for name, decision in run.decisions.items():
        if not same_verdict(decision, reference):
            run.notes.append(f"{name} decides otherwise than regorus on the input")
    if regocpp is not None:
        run.corpus_diffs["rego-cpp"] = corpus_disagreements(run.policy, RegoCpp)
    if opa is not None:
        run.corpus_diffs["opa"] = corpus_disagreements(
            run.policy, lambda p: EmbeddedEngine(p.root, policy=p, backend=backend("opa"))
        )
    per_thread = max(200, args.n // 2)
    for name, engine in (("regorus", regorus_path), ("opa", opa)):
        if engine is not None:
            one = throughput(engine, run.policy_input, 1, per_thread)
            many = throughput(engine, run.policy_input, args.threads, per_thread)
            run.scaling.append(
                {"engine": name, "one_thread_per_s": round(one), "n_threads_per_s": round(many)}
            )

    out = results(run, args.threads)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)
    return 0 if out["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
