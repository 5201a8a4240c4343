"""A fault plan for the local FHIR store (issue 9): which failures to inject, how often, reproducibly from a seed.

The kinds are the ways an EHR's FHIR endpoint fails a writer (http.html, RFC 9110 sections 15.6.1,
15.6.4 and 10.2.3, RFC 6585 section 4): an error answer (500), unavailability (503, perhaps with
Retry-After), throttling (429 with Retry-After), a slow answer, and a connection that closes with
no answer at all, before or after the write was committed. The last is the ambiguous case a writer
must settle by looking the write up, never by blindly resending.

Each request the plan covers is decided from (seed, n), n counting those requests in arrival
order: the same plan and the same request sequence give the same faults on every run.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

from chartgate.devstore.interactions import INTERACTIONS, WRITES, Interaction

FaultKind = Literal[
    "server_error",
    "unavailable",
    "throttle",
    "slow",
    "drop_before_commit",
    "drop_after_commit",
    "reject",
    "alter",
]
# The order in which a request's draw is laid against the probabilities: fixed, so a seed
# always means the same thing.
FAULT_KINDS: Final[tuple[FaultKind, ...]] = (
    "server_error",
    "unavailable",
    "throttle",
    "slow",
    "drop_before_commit",
    "drop_after_commit",
    # Added last: a seed keeps meaning what it meant for the kinds before it.
    "reject",
    "alter",
)


class _Rule(BaseModel):
    """One kind of fault: how likely on each covered request, and which interactions it covers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: float = Field(default=0.0, ge=0.0, le=1.0)
    interactions: frozenset[Interaction] = Field(
        default=WRITES,
        description="create, read, update, delete, search, transaction; default the writes",
    )

    @field_serializer("interactions")
    def _in_order(self, interactions: frozenset[Interaction]) -> list[str]:
        return [i for i in INTERACTIONS if i in interactions]


class ServerError(_Rule):
    """500 with an OperationOutcome; nothing is stored."""


class Unavailable(_Rule):
    """503, with `Retry-After: <seconds>` when set; nothing is stored."""

    retry_after_seconds: int | None = Field(default=None, ge=0, le=86_400)


class Throttle(_Rule):
    """429 with `Retry-After: <seconds>`; nothing is stored."""

    retry_after_seconds: int = Field(default=1, ge=0, le=86_400)


class Slow(_Rule):
    """Answer after `delay_seconds`. `after`: the request is handled (a write commits) and the
    answer is held back, so a client that times out has a stored write it never heard of;
    `before`: the request waits before it is handled, so a client gone by then stores nothing."""

    delay_seconds: float = Field(default=1.0, gt=0.0, le=300.0)
    phase: Literal["before", "after"] = "after"


class Drop(_Rule):
    """Close the connection without any HTTP response. `reset`: a TCP reset (the client reads
    ECONNRESET) instead of an orderly close (the client reads end of stream)."""

    reset: bool = False


class Reject(_Rule):
    """The EHR's own business validation refuses the resource (a code outside its value set, a
    profile it enforces): `status` (400 or 422) with an OperationOutcome whose `diagnostics` say
    why; nothing is stored. Not to be retried."""

    status: Literal[400, 422] = 422
    diagnostics: str = Field(
        default="Observation.code: the code is not in the value set this EHR accepts",
        min_length=1,
        max_length=500,
    )


_PATH: Final = r"^[A-Za-z][A-Za-z0-9_]*(\[\d+\])?(\.[A-Za-z][A-Za-z0-9_]*(\[\d+\])?)*$"


class Change(BaseModel):
    """One change the store makes to a resource before storing it (`path` like `note[0].text`):
    `truncate` to `length` characters, `set` to `value`, `pad` with spaces (a cosmetic change
    an EHR may make), or `remove`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z][A-Za-z0-9_]*(\[\d+\])?(\.[A-Za-z][A-Za-z0-9_]*(\[\d+\])?)*$",
    )
    op: Literal["truncate", "set", "pad", "remove"]
    length: int = Field(default=10, ge=0, le=10_000)
    value: Any = None


class Alter(_Rule):
    """The store changes what it was sent before storing it (a truncated note, a remapped code, a
    changed unit, padded text) and answers as if it stored the write as sent. What
    reconciliation must catch (issue 12). Changes whose path is absent are skipped."""

    changes: tuple[Change, ...] = Field(default=(), max_length=20)


class Scheduled(BaseModel):
    """`count` consecutive requests (of `interactions`) get `fault`; `none` lets them through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fault: FaultKind | Literal["none"]
    count: int = Field(default=1, ge=1, le=1_000_000)
    interactions: frozenset[Interaction] | None = Field(
        default=None, description="default: the interactions of the fault's rule (none: writes)"
    )

    @field_serializer("interactions")
    def _in_order(self, interactions: frozenset[Interaction] | None) -> list[str] | None:
        return None if interactions is None else [i for i in INTERACTIONS if i in interactions]


class FaultPlan(BaseModel):
    """The JSON a store is started with (`--faults FILE`) or sent to `POST /_faults`.

    A request first meets the schedule: its head entry, if it covers the request, decides it
    (and counts down). Otherwise one draw u in [0, 1) from (seed, n) is laid against the
    probabilities in FAULT_KINDS order, so each kind strikes with exactly its probability; they
    must sum to at most 1. `max_faults` stops injecting after that many faults of any source.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    max_faults: int | None = Field(default=None, ge=0)
    server_error: ServerError = ServerError()
    unavailable: Unavailable = Unavailable()
    throttle: Throttle = Throttle()
    slow: Slow = Slow()
    drop_before_commit: Drop = Drop()
    drop_after_commit: Drop = Drop()
    reject: Reject = Reject()
    alter: Alter = Alter()
    schedule: tuple[Scheduled, ...] = ()

    @model_validator(mode="after")
    def _probabilities_sum_to_at_most_one(self) -> FaultPlan:
        total = sum(self.rule(kind).probability for kind in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault probabilities sum to {total:g}; at most 1 is possible")
        return self

    def rule(self, kind: FaultKind) -> _Rule:
        rule: _Rule = getattr(self, kind)
        return rule

    @classmethod
    def load(cls, path: Path) -> FaultPlan:
        """Read a plan file; a bad one raises ValueError naming the file and the field."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"cannot read fault plan {path}: {exc.strerror}") from None
        except ValidationError as exc:
            raise ValueError(f"fault plan {path} is invalid: {exc}") from None


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault decided for one request, with the rule that carries its parameters."""

    kind: FaultKind
    rule: _Rule
    index: int  # n: which covered request this was


def draw(seed: int, n: int) -> float:
    """A uniform number in [0, 1) for request n: SHA-256, so it is the same on every platform
    and Python version (random.Random's stream is not promised to stay)."""
    digest = hashlib.sha256(f"chartgate-faults:{seed}:{n}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FaultState:
    """The plan in force and what it has done; shared by the injector and the control endpoint.

    Decisions take a lock: requests are decided on the event loop, but a test may read the
    counters from another thread of the same process.
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self.replace(plan or FaultPlan())

    def replace(self, plan: FaultPlan) -> None:
        """Put a plan in force and start its counters (and its draws) from zero."""
        with self._lock:
            self._plan = plan
            self._covered = frozenset(
                i
                for kind in FAULT_KINDS
                if plan.rule(kind).probability > 0
                for i in plan.rule(kind).interactions
            )
            self._schedule = [
                (entry, entry.count, self._schedule_covers(plan, entry)) for entry in plan.schedule
            ]
            self._requests = 0
            self._drawn = 0
            self._injected: dict[FaultKind, int] = dict.fromkeys(FAULT_KINDS, 0)

    @staticmethod
    def _schedule_covers(plan: FaultPlan, entry: Scheduled) -> frozenset[Interaction]:
        if entry.interactions is not None:
            return entry.interactions
        return WRITES if entry.fault == "none" else plan.rule(entry.fault).interactions

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def decide(self, interaction: Interaction) -> Fault | None:
        """The fault for this request, or None; counts it."""
        with self._lock:
            self._requests += 1
            plan = self._plan
            if plan.max_faults is not None and sum(self._injected.values()) >= plan.max_faults:
                return None
            if self._schedule:
                entry, left, covers = self._schedule[0]
                if interaction in covers:
                    if left <= 1:
                        self._schedule.pop(0)
                    else:
                        self._schedule[0] = (entry, left - 1, covers)
                    if entry.fault == "none":
                        return None
                    self._injected[entry.fault] += 1
                    return Fault(entry.fault, plan.rule(entry.fault), -1)
            if interaction not in self._covered:
                return None
            n = self._drawn
            self._drawn += 1
            u = draw(plan.seed, n)
            edge = 0.0
            for kind in FAULT_KINDS:
                rule = plan.rule(kind)
                edge += rule.probability
                if u < edge:
                    if interaction not in rule.interactions:
                        return None  # this slice belongs to a kind that spares the request
                    self._injected[kind] += 1
                    return Fault(kind, rule, n)
            return None

    def counters(self) -> dict[str, Any]:
        """What `GET /_faults` reports: requests seen, draws made, faults injected per kind."""
        with self._lock:
            return {
                "requests": self._requests,
                "drawn": self._drawn,
                "injected": dict(self._injected),
                "injected_total": sum(self._injected.values()),
                "schedule_left": [
                    {"fault": entry.fault, "left": left} for entry, left, _ in self._schedule
                ],
            }

    def report(self) -> Mapping[str, Any]:
        return {"plan": self._plan.model_dump(mode="json"), **self.counters()}


__all__ = [
    "FAULT_KINDS",
    "INTERACTIONS",
    "Drop",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultState",
    "Scheduled",
    "ServerError",
    "Slow",
    "Throttle",
    "Unavailable",
    "draw",
]


_STEP: Final = re.compile(r"([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?")


def apply_changes(resource: dict[str, Any], changes: tuple[Change, ...]) -> None:
    """Apply an Alter rule's changes to a resource in place (paths that are absent are skipped)."""
    for change in changes:
        steps = [_STEP.fullmatch(part) for part in change.path.split(".")]
        parent: Any = resource
        for match in steps[:-1]:
            assert match is not None  # the path pattern was checked when the plan loaded
            parent = _step(parent, match)
            if parent is None:
                break
        last = steps[-1]
        if parent is None or last is None:
            continue
        name, index = last.group(1), last.group(2)
        if not isinstance(parent, dict) or name not in parent:
            continue
        if index is not None:
            items = parent[name]
            if not isinstance(items, list) or int(index) >= len(items):
                continue
            holder: Any = items
            key: Any = int(index)
        else:
            holder, key = parent, name
        current = holder[key]
        if change.op == "remove":
            del holder[key]
        elif change.op == "set":
            holder[key] = change.value
        elif change.op == "truncate" and isinstance(current, str):
            holder[key] = current[: change.length]
        elif change.op == "pad" and isinstance(current, str):
            holder[key] = f" {current}  "


def _step(node: Any, match: re.Match[str]) -> Any:
    name, index = match.group(1), match.group(2)
    if not isinstance(node, dict):
        return None
    value = node.get(name)
    if index is None:
        return value
    if isinstance(value, list) and int(index) < len(value):
        return value[int(index)]
    return None
