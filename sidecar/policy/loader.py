"""Load a Rego policy directory and its data, compute its revision, and refuse what rego-cpp would get wrong."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regopy

DATA_FILE = "data.json"
TEST_SUFFIX = "_test.rego"
# The only top-level data key an operator file may set: settings and kill switches. The
# library's tables (chartgate_library) are policy and change only with a policy release.
OPERATOR_KEYS = frozenset({"chartgate_config"})

# Builtins rego-cpp implements as keywords rather than as registered builtins: `is_builtin`
# says no, yet they evaluate (measured with regopy 1.5.2: `print` writes to stdout).
_KEYWORD_BUILTINS = frozenset({"print", "set"})  # `set()` is the empty-set literal

_KEYWORDS = frozenset(
    {
        "as",
        "contains",
        "default",
        "else",
        "every",
        "false",
        "if",
        "import",
        "in",
        "not",
        "null",
        "package",
        "some",
        "true",
        "with",
    }
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CALL = re.compile(rf"(?<![\w.])({_IDENT}(?:\.{_IDENT})*)\s*\(")
_PACKAGE = re.compile(rf"^\s*package\s+({_IDENT}(?:\.{_IDENT})*)", re.MULTILINE)
_IMPORT = re.compile(
    rf"^\s*import\s+((?:data|input)(?:\.{_IDENT})*)(?:\s+as\s+({_IDENT}))?", re.MULTILINE
)
# A rule or function head starts a line (after `default`, optionally).
_HEAD = re.compile(rf"^(?:default\s+)?({_IDENT})\b", re.MULTILINE)
_WITH = re.compile(rf"\bwith\s+((?:input|data)(?:\.{_IDENT})*)\s+as\s+({_IDENT})?")


class PolicyLoadError(Exception):
    """The policy directory cannot be served: unreadable, invalid, or unsafe on rego-cpp."""


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
    conflict in rego-cpp (and in OPA) instead of overriding.
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
        value = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{path}: policy data is not UTF-8: {exc}") from exc
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
    """Read a policy directory (and an optional operator data file) and check it for rego-cpp.

    Raises PolicyLoadError naming file and line for a missing directory, unreadable files,
    invalid JSON, operator data outside `chartgate_config`, a call to a builtin rego-cpp lacks,
    or a `with` form rego-cpp mishandles. Syntax errors surface when the engine compiles
    (`sidecar.policy.regocpp.compile_policy`), also as PolicyLoadError.
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
    check_modules(modules)
    return PolicySet(
        root=policy_dir,
        modules=tuple(modules),
        data=data,
        revision=_revision(entries),
        library_revision=_revision(library),
        data_files=tuple(data_files),
    )


# --- static checks -------------------------------------------------------------------------


def _blank_comments_and_strings(source: str) -> str:
    """The source with comments and string literals replaced by spaces (newlines kept), so
    offsets and line numbers still match and nothing inside a string looks like a call."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "#":
            end = source.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif ch == '"':
            j = i + 1
            while j < n and source[j] != '"' and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            j = min(j + 1, n)
            out.append('"' + " " * max(0, j - i - 2) + ('"' if j - i >= 2 else ""))
            i = j
        elif ch == "`":
            end = source.find("`", i + 1)
            end = n - 1 if end < 0 else end
            out.append("".join(c if c == "\n" else " " for c in source[i : end + 1]))
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


@dataclass(frozen=True, slots=True)
class _ModuleInfo:
    module: PolicyModule
    code: str  # comments and strings blanked
    package: str
    aliases: frozenset[str]


def _module_info(module: PolicyModule) -> _ModuleInfo:
    code = _blank_comments_and_strings(module.source)
    match = _PACKAGE.search(code)
    aliases = {
        alias or path.rsplit(".", 1)[-1] for path, alias in _IMPORT.findall(code) if "." in path
    }
    return _ModuleInfo(module, code, match.group(1) if match else "", frozenset(aliases))


def _defined_names(infos: Iterable[_ModuleInfo]) -> dict[str, set[str]]:
    """Rule and function names per package (the heads that start a line)."""
    names: dict[str, set[str]] = {}
    for info in infos:
        heads = {m.group(1) for m in _HEAD.finditer(info.code)} - _KEYWORDS
        names.setdefault(info.package, set()).update(heads)
    return names


_FUNCTION_HEAD = re.compile(rf"^({_IDENT})\(", re.MULTILINE)


def _function_heads(info: _ModuleInfo) -> list[tuple[str, int, int]]:
    """(name, arity, line) of every function head (`name(args) ...` starting a line)."""
    heads: list[tuple[str, int, int]] = []
    code = info.code
    for match in _FUNCTION_HEAD.finditer(code):
        depth, commas, i = 1, 0, match.end()
        blank = True
        while i < len(code) and depth:
            ch = code[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == "," and depth == 1:
                commas += 1
            if depth and not ch.isspace():
                blank = False
            i += 1
        heads.append((match.group(1), 0 if blank else commas + 1, _line_of(code, match.start())))
    return heads


def _arity_problems(infos: Sequence[_ModuleInfo]) -> list[str]:
    """rego-cpp 1.5.2 crashes (segfault while building) when functions of one name have
    different arities, even in different packages (measured; docs/policy.md)."""
    by_name: dict[str, dict[int, list[str]]] = {}
    for info in infos:
        for name, arity, line in _function_heads(info):
            by_name.setdefault(name, {}).setdefault(arity, []).append(f"{info.module.name}:{line}")
    problems: list[str] = []
    for name, arities in sorted(by_name.items()):
        if len(arities) > 1:
            where = "; ".join(
                f"{arity} argument(s) at {', '.join(places)}"
                for arity, places in sorted(arities.items())
            )
            problems.append(
                f"function {name} is defined with different numbers of arguments ({where}); "
                "rego-cpp 1.5.2 crashes compiling that, even across packages: rename one"
            )
    return problems


def check_modules(modules: Sequence[PolicyModule]) -> None:
    """Refuse calls to builtins rego-cpp lacks and forms it crashes on or gets wrong.

    rego-cpp 1.5.2 turns a call to a builtin it does not implement into *undefined*, so
    `deny if net.cidr_contains(...)` would silently stop denying: such a policy must not load.
    """
    infos = [_module_info(m) for m in modules]
    defined = _defined_names(infos)
    interpreter = regopy.Interpreter()
    problems: list[str] = _arity_problems(infos)
    for info in infos:
        local = defined.get(info.package, set())
        for match in _CALL.finditer(info.code):
            name = match.group(1)
            head = name.split(".", 1)[0]
            if name in _KEYWORDS or name in _KEYWORD_BUILTINS:
                continue
            if "." not in name and name in local:
                continue  # the package's own function
            if "." in name and (head in {"data", "input"} or head in info.aliases):
                continue  # a function of another package, through data. or an import
            if not interpreter.is_builtin(name):
                line = _line_of(info.code, match.start(1))
                problems.append(
                    f"{info.module.name}:{line}: calls builtin {name}, which the embedded engine "
                    f"(rego-cpp {regopy.rego_version()}) does not implement; it would evaluate "
                    "to undefined instead of failing, so the policy is refused"
                )
        problems.extend(_with_problems(info, local))
    if problems:
        raise PolicyLoadError("policy refused:\n  " + "\n  ".join(problems))


def _with_problems(info: _ModuleInfo, local: set[str]) -> list[str]:
    """`with` forms rego-cpp 1.5.2 gets wrong (measured; see docs/policy.md)."""
    problems: list[str] = []
    for match in _WITH.finditer(info.code):
        target, value = match.group(1), match.group(2)
        line = _line_of(info.code, match.start())
        if target == "input":
            problems.append(
                f"{info.module.name}:{line}: `with input as ...` crashes rego-cpp 1.5.2 when the "
                "rule under test calls a builtin; replace input key by key "
                "(`with input.action as a with input.agent as b`)"
            )
        elif value is not None and (value == "data" or value in info.aliases or value in local):
            problems.append(
                f"{info.module.name}:{line}: `with {target} as {value}` names a rule or data; "
                "rego-cpp 1.5.2 then evaluates to undefined. Bind it to a local variable first "
                f"(`v := {value}` ... `with {target} as v`)"
            )
    return problems


_ERROR_AT = re.compile(r"\(error \d+:([^|\s]*)\|(\d+)\|\d+\s*\(errormsg \d+:([^)\n]*)")


def compile_error(exc: Exception, modules: Sequence[PolicyModule]) -> PolicyLoadError:
    """A rego-cpp parse/compile error as `file:line: message` lines."""
    text = str(exc)
    sources = {m.name: m.source for m in modules}
    found: list[str] = []
    for name, offset, message in _ERROR_AT.findall(text):
        source = sources.get(name)
        where = f"{name}:{_line_of(source, int(offset))}" if source is not None else name or "?"
        entry = f"{where}: {message.strip()}"
        if entry not in found:
            found.append(entry)
    if not found:
        found.append(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    return PolicyLoadError("policy does not compile:\n  " + "\n  ".join(found))
