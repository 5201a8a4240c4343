"""Load a Rego policy directory and its operator data, and compute the revision naming them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import PolicyLoadError
from sidecar.validation.strict_json import DuplicateKeyError, loads_strict

DATA_FILE = "data.json"
TEST_SUFFIX = "_test.rego"
# The only top-level data key an operator file may set: settings and kill switches. The
# library's tables (chartgate_library) are policy and change only with a policy release.
OPERATOR_KEYS = frozenset({"chartgate_config"})


@dataclass(frozen=True, slots=True)
class PolicyModule:
    """One Rego source file: its name relative to the policy directory, and its text."""

    name: str
    source: str

    @property
    def is_test(self) -> bool:
        return self.name.endswith(TEST_SUFFIX)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A loaded policy directory: modules, merged data and the revision naming them."""

    root: Path
    modules: tuple[PolicyModule, ...]
    data: Mapping[str, Any]
    revision: str
    library_revision: str = ""  # the directory alone, without the operator data file
    data_files: tuple[Path, ...] = field(default=())

    @property
    def serving_modules(self) -> tuple[PolicyModule, ...]:
        """The modules that decide: every `*.rego` but the `*_test.rego` tests."""
        return tuple(m for m in self.modules if not m.is_test)

    @property
    def test_modules(self) -> tuple[PolicyModule, ...]:
        return tuple(m for m in self.modules if m.is_test)

    @property
    def data_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"))


def merge_data(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Operator data over library defaults: objects merge key by key, any other value replaces.

    Done here rather than by adding two data documents, because a key present in both would
    conflict in every engine (OPA included) instead of overriding.
    """
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_data(current, value)
        else:
            merged[key] = value
    return merged


def _parse_json_object(path: Path, content: bytes) -> dict[str, Any]:
    try:
        value = loads_strict(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{path}: policy data is not UTF-8: {exc}") from exc
    except DuplicateKeyError as exc:
        # Engines disagree on which of two equal keys wins; a policy file must not depend on it.
        raise PolicyLoadError(f"{path}: policy data has a duplicate key: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PolicyLoadError(
            f"{path}:{exc.lineno}: policy data is not valid JSON: {exc.msg}"
        ) from exc
    if not isinstance(value, dict):
        raise PolicyLoadError(f"{path}: policy data must be a JSON object")
    return value


def policy_files(policy_dir: Path) -> list[Path]:
    """Every file that makes up a revision: `*.rego` (tests included) and the top-level data.json.

    Paths with a part starting with "." are skipped: a Kubernetes ConfigMap volume holds each
    file twice, as `name` (a symlink) and under the kubelet's hidden `..<timestamp>/` directory.
    """
    files = [
        p
        for p in policy_dir.rglob("*.rego")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(policy_dir).parts)
    ]
    data = policy_dir / DATA_FILE
    if data.is_file():
        files.append(data)
    return sorted(files)


_EXTRA_PREFIX = "@extra/"


def _read_entries(policy_dir: Path, extra_data: Path | None) -> list[tuple[str, bytes]]:
    """(name, bytes) of every policy file, read once: the revision and the loaded policy are
    computed from the same bytes, so a file edited mid-load cannot pair one with the other."""
    entries = [
        (p.relative_to(policy_dir).as_posix(), p.read_bytes()) for p in policy_files(policy_dir)
    ]
    if extra_data is not None:
        entries.append((_EXTRA_PREFIX + extra_data.name, extra_data.read_bytes()))
    return entries


def _revision(entries: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in entries:
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(content).digest())
    return "sha256:" + digest.hexdigest()[:16]


def compute_revision(policy_dir: Path, extra_data: Path | None = None) -> str:
    """`sha256:` + 16 hex digits over the sorted relative paths and contents of the policy files
    (every `*.rego`, tests included, and data.json) and the operator data file, if any."""
    return _revision(_read_entries(policy_dir, extra_data))


def load_policy(
    policy_dir: Path, extra_data: Path | None = None, *, include_tests: bool = False
) -> PolicySet:
    """Read a policy directory (and an optional operator data file).

    Raises PolicyLoadError naming the file for a missing directory, unreadable files, invalid or
    duplicate-keyed JSON, or operator data outside `chartgate_config`. Syntax errors and calls
    to builtins an engine lacks surface when a backend compiles the set, also as PolicyLoadError.
    """
    if not policy_dir.is_dir():
        raise PolicyLoadError(f"{policy_dir}: policy directory does not exist")
    if extra_data is not None and not extra_data.is_file():
        raise PolicyLoadError(f"{extra_data}: operator data file does not exist")
    try:
        entries = _read_entries(policy_dir, extra_data)
    except OSError as exc:
        raise PolicyLoadError(f"{policy_dir}: cannot read policy files: {exc}") from exc
    library = [(name, content) for name, content in entries if not name.startswith(_EXTRA_PREFIX)]
    modules: list[PolicyModule] = []
    data: dict[str, Any] = {}
    data_files: list[Path] = []
    for name, content in entries:
        if name.endswith(".rego"):
            if name.endswith(TEST_SUFFIX) and not include_tests:
                continue
            try:
                modules.append(PolicyModule(name, content.decode("utf-8")))
            except UnicodeDecodeError as exc:
                raise PolicyLoadError(f"{policy_dir / name}: not UTF-8: {exc}") from exc
        elif name == DATA_FILE:
            data = _parse_json_object(policy_dir / name, content)
            data_files.append(policy_dir / name)
        elif extra_data is not None:
            override = _parse_json_object(extra_data, content)
            unexpected = sorted(set(override) - OPERATOR_KEYS)
            if unexpected:
                raise PolicyLoadError(
                    f"{extra_data}: operator data may only set {', '.join(sorted(OPERATOR_KEYS))}; "
                    f"found {', '.join(unexpected)} (library tables change only with a policy release)"
                )
            data = merge_data(data, override)
            data_files.append(extra_data)
    if not any(not m.is_test for m in modules):
        raise PolicyLoadError(f"{policy_dir}: no .rego policy files")
    return PolicySet(
        root=policy_dir,
        modules=tuple(modules),
        data=data,
        revision=_revision(entries),
        library_revision=_revision(library),
        data_files=tuple(data_files),
    )
