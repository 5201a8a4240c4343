"""Chartgate as a user gets it: built into a fresh virtual environment, run from an empty directory.

The package is built (pip builds a wheel) from the same inputs the container image is built from
(the Dockerfile's build stage, filtered by .dockerignore), staged in a temporary directory, and
installed, not editable, into a new venv. Nothing can then resolve back into the source tree: the
demo, `chartgate policy test` and the shipped Rego library all come from that venv. The venv gets
only the product's dependencies, so this also shows the product runs without the dev-only OPA
engine. Building from a staged copy rather than the repository itself keeps setuptools' `build/`
and `*.egg-info` out of a tree other processes are using, and a stale `build/lib` (setuptools never
cleans it) from hiding a package-data file that is no longer declared.

Dependencies come from the configured package index (PyPI by default) through pip's cache, so a
repeat run installs from the cache. Without a reachable index the install tests skip, naming pip's
network error; any other install failure fails.

The Dockerfile and .dockerignore are checked statically here too (no container engine needed):
the build stage copies every build input, keeps the policy library, and tests it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.policy.loader import load_policy
from sidecar.policy.testing import discover_tests

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "sidecar" / "policy" / "rego"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# What the package is built from. The Dockerfile's build stage must copy each of these
# (test_dockerfile_build_stage_copies_every_build_input), so this install is the image's install.
BUILD_INPUTS = ("pyproject.toml", "README.md", "chartgate", "sidecar", "adapters", "console")
# The demo's audit log holds at least this many records: every step of every proposal, the
# agent's and the reviewers' (as tests/test_demo.py asserts).
DEMO_AUDIT_RECORDS_AT_LEAST = 35

# Explicit budgets, in seconds. Measured here: about 13 s to install on a cold pip cache and 11 s
# warm, 4 s for the venv, 2 s for the demo; the budgets leave room for a slow index.
VENV_TIMEOUT = 120
INSTALL_TIMEOUT = 420
RUN_TIMEOUT = 180
# The module-scoped install runs inside the first test's timeout (pytest-timeout counts setup).
pytestmark = pytest.mark.timeout(VENV_TIMEOUT + INSTALL_TIMEOUT + RUN_TIMEOUT + 60)

# pip's own words for "the index could not be reached" (urllib3 and socket errors it logs).
_NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Max retries exceeded",
)
# ...and its words for "so a requirement could not be found", which is how a network failure ends.
_NOT_FOUND = ("No matching distribution found", "Could not find a version that satisfies")


# --- .dockerignore semantics -----------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """Docker's ignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")  # `**/` is zero or more directories
                i += 1
            else:
                out.append(".*")
            continue
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i + 1)
            out.append(pattern[i : end + 1])
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "^" + "".join(out) + "$"


@dataclass(frozen=True)
class IgnoreRule:
    negated: bool
    regex: re.Pattern[str]


def dockerignore_rules(text: str) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        # Docker cleans each pattern: no leading "/" (the context root) or trailing "/".
        pattern = pattern.strip("/")
        rules.append(IgnoreRule(negated, re.compile(_glob_regex(pattern))))
    return rules


def is_ignored(relative: str, rules: list[IgnoreRule]) -> bool:
    """Whether Docker leaves this context path out: the last rule that matches the path or one of
    its parent directories decides (an ignored directory takes everything beneath it)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for rule in rules:
        if any(rule.regex.match(candidate) for candidate in candidates):
            ignored = not rule.negated
    return ignored


def stage_build_context(dest: Path) -> Path:
    """Copy the build inputs as Docker would send them (after .dockerignore) into dest."""
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for name in BUILD_INPUTS:
        source = REPO / name
        files = (
            [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        )
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            if is_ignored(relative, rules):
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


# --- the installed product ----------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    venv: Path
    home: Path  # HOME for runs: nothing from the developer's home leaks in

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv as a user would: from cwd, with no PYTHONPATH at all."""
        return subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
            env={"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8"},
        )


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def skip_if_unreachable(output: str, what: str, *, gave_up: bool = True) -> None:
    """Skip when pip failed only because no package index could be reached: it logged a
    connection error and then found no distribution (gave_up=False: it was cut off first)."""
    trouble = next((marker for marker in _NETWORK_ERRORS if marker in output), None)
    if trouble is None or (gave_up and not any(marker in output for marker in _NOT_FOUND)):
        return
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
    pytest.skip(
        f"{what}: no package index reachable ({trouble}); installing Chartgate's dependencies "
        f"needs the network (PyPI or the index pip is configured with)"
        + (f"; pip: {errors[-1][:200]}" if errors else "")
    )


def _pip_environment() -> dict[str, str]:
    """The caller's environment (index, proxy and cache settings) minus anything that would let
    Python find the source tree or another environment."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    home = root / "home"
    home.mkdir()
    context = stage_build_context(root / "context")
    env = _pip_environment()

    created = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)],
        capture_output=True,
        text=True,
        timeout=VENV_TIMEOUT,
        check=False,
        env=env,
    )
    assert created.returncode == 0, f"python -m venv failed: {created.stderr[-2000:]}"
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--retries",
        "2",  # an unreachable index should skip in seconds, not minutes
        str(context),
    ]
    try:
        done = subprocess.run(
            command,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        skip_if_unreachable(output, "pip install timed out", gave_up=False)
        pytest.fail(f"pip install took over {INSTALL_TIMEOUT} s:\n{output[-4000:]}")
    if done.returncode != 0:
        output = done.stdout + done.stderr
        skip_if_unreachable(output, "pip install failed")
        pytest.fail(f"pip install of the project failed ({done.returncode}):\n{output[-4000:]}")
    return Installed(venv=venv, home=home)


def _empty_dir(tmp_path: Path) -> Path:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd


def test_installed_demo_passes_from_an_empty_directory(
    installed: Installed, tmp_path: Path
) -> None:
    cwd = _empty_dir(tmp_path)
    done = installed.run([str(installed.bin / "chartgate"), "demo", "--workdir", "state"], cwd)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert "Demo passed" in done.stdout, output
    # The symptom: without a policy the sidecar blocked every write with this reason.
    assert "policy.unavailable" not in done.stdout, output
    verified = re.search(r"^OK: (\d+) records verified, chain intact", done.stdout, re.MULTILINE)
    assert verified is not None, output
    (log,) = (cwd / "state" / "demo").glob("run-*/audit/audit.jsonl")
    records = len(log.read_text().splitlines())
    assert int(verified.group(1)) == records >= DEMO_AUDIT_RECORDS_AT_LEAST


def test_installed_package_carries_the_whole_policy_library(
    installed: Installed, tmp_path: Path
) -> None:
    done = installed.run(
        [
            str(installed.bin / "python"),
            "-c",
            "import sidecar; from sidecar.policy.library import shipped_policy_dir; "
            "print(sidecar.__file__); print(shipped_policy_dir())",
        ],
        _empty_dir(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    package_file, library_dir = (Path(line) for line in done.stdout.splitlines())
    # Imported from the venv's site-packages, not from the source tree.
    assert package_file.resolve().is_relative_to(installed.venv.resolve()), package_file
    library = library_dir.resolve()
    assert library.is_relative_to(installed.venv.resolve()), library

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
        }

    shipped, source = files(library), files(LIBRARY)
    assert "data.json" in source
    assert any(name.endswith("_test.rego") for name in source)
    assert sorted(shipped) == sorted(source)
    assert shipped == source, "an installed policy file differs from its source"


def test_installed_policy_tests_pass(installed: Installed, tmp_path: Path) -> None:
    done = installed.run([str(installed.bin / "chartgate"), "policy", "test"], _empty_dir(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = re.search(r"^(\d+) passed, 0 failed", done.stdout, re.MULTILINE)
    assert summary is not None, done.stdout[-3000:]
    expected = discover_tests(load_policy(LIBRARY, include_tests=True).modules)
    assert int(summary.group(1)) == len(expected) > 0


# --- the container image, checked without a container engine -----------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    arguments: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, each tagged with its stage name."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        # Comment lines are dropped, also between continuation lines, as Docker does.
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    instructions: list[Instruction] = []
    stage = ""
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            stage = (
                words[-1]
                if len(words) >= 3 and words[-2].upper() == "AS"
                else f"#{len(instructions)}"
            )
        instructions.append(Instruction(stage, keyword, arguments.strip()))
    return instructions


def _copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in instruction.arguments.split() if not w.startswith("--")]
    return [w.removeprefix("./").rstrip("/") or "." for w in words[:-1]]


def test_dockerfile_build_stage_copies_every_build_input() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    build = [i for i in instructions if i.stage == "build"]
    assert build, "the Dockerfile has no stage named build"
    copied = {
        source
        for i in build
        if i.keyword == "COPY" and "--from=" not in i.arguments
        for source in _copy_sources(i)
    }
    for name in BUILD_INPUTS:
        assert name in copied or "." in copied, f"the build stage does not COPY {name}"
    library = LIBRARY.relative_to(REPO).as_posix()
    assert any(library == c or library.startswith(c + "/") or c == "." for c in copied)

    runs = [i.arguments for i in build if i.keyword == "RUN"]
    install = next(n for n, run in enumerate(runs) if re.search(r"pip install .*\.(\s|$)", run))
    checks = [n for n, run in enumerate(runs) if "chartgate policy test" in run]
    assert checks, "the build stage never runs `chartgate policy test` on the installed library"
    assert min(checks) >= install, "the library check must run against the installed package"

    final = instructions[-1].stage
    runtime_copies = [i for i in instructions if i.stage == final and i.keyword == "COPY"]
    assert any(
        "--from=build" in i.arguments and "/opt/chartgate" in i.arguments for i in runtime_copies
    ), "the runtime stage must take the built virtualenv, and with it the library"


def test_dockerignore_keeps_the_policy_library_and_build_inputs() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    # The matcher itself: these are excluded by the patterns the file is known to hold.
    for excluded in (".venv/bin/python", "tests/test_installed.py", "sidecar/__pycache__/x.pyc"):
        assert is_ignored(excluded, rules), excluded
    library = sorted(
        p.relative_to(REPO).as_posix()
        for p in LIBRARY.iterdir()
        if p.suffix == ".rego" or p.name == "data.json"
    )
    assert "sidecar/policy/rego/data.json" in library
    for name in [*library, "sidecar/policy/rego", "pyproject.toml", "README.md"]:
        assert not is_ignored(name, rules), f".dockerignore leaves {name} out of the image"
    for package in ("chartgate", "sidecar", "adapters"):
        for path in (REPO / package).rglob("*.py"):
            relative = path.relative_to(REPO).as_posix()
            if "__pycache__" not in relative:
                assert not is_ignored(relative, rules), relative


@pytest.mark.parametrize(
    ("pattern", "path", "ignored"),
    [
        ("**/*.json", "sidecar/policy/rego/data.json", True),
        ("*.json", "sidecar/policy/rego/data.json", False),
        ("sidecar/policy", "sidecar/policy/rego/decision.rego", True),
        ("**/rego", "sidecar/policy/rego/decision.rego", True),
        ("*.py[cod]", "x.pyc", True),
        ("/build/", "build/lib/x.py", True),
        ("docs", "docs/deploy.md", True),
    ],
)
def test_dockerignore_matcher_follows_docker(pattern: str, path: str, ignored: bool) -> None:
    """The patterns a careless edit might add are recognised, so the test above would catch them."""
    assert is_ignored(path, dockerignore_rules(pattern)) is ignored
    assert not is_ignored(path, dockerignore_rules(f"{pattern}\n!{path}"))


PIP_OFFLINE = (
    "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(...: "
    "Failed to establish a new connection: [Errno -2] Name or service not known')': /simple/x/\n"
    "ERROR: Could not find a version that satisfies the requirement setuptools>=69\n"
    "ERROR: No matching distribution found for setuptools>=69\n"
)
PIP_BUILD_FAILED = (
    "Processing ./context\n  error: subprocess-exited-with-error\n"
    "ERROR: Failed to build installable wheels for some pyproject.toml based projects\n"
)


def test_only_an_unreachable_index_skips_the_install_tests() -> None:
    """A broken build must fail the install tests, never turn them into a skip."""
    with pytest.raises(pytest.skip.Exception, match=r"NewConnectionError.*setuptools>=69"):
        skip_if_unreachable(PIP_OFFLINE, "pip install failed")
    skip_if_unreachable(PIP_BUILD_FAILED, "pip install failed")
    # A connection hiccup pip recovered from does not excuse a build failure after it.
    skip_if_unreachable(PIP_OFFLINE.splitlines()[0] + "\n" + PIP_BUILD_FAILED, "failed")
