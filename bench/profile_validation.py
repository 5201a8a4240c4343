"""Benchmark: profile and terminology validation (check_profiles) per resource, beside validate_write.

One row per resource the product writes (a heart rate, a 2.4 KB blood-pressure panel, a lab
draft, a medication order, an allergy, a condition, a Patient telecom update), rows interleaved
in rounds; p50/p99 in µs. The `validate_write` row (strict parse, bounds, R4B model, references,
canonical hash: the existing path, without profiles) is the baseline the added cost is set
against. Also the one-time load-and-compile of the definitions. See bench/README.md.

    .venv/bin/python bench/profile_validation.py [--n 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Well under the Propose budget (DESIGN.md: p50 <= 1 ms for the whole decision path).
TARGET_P50_US = 300.0
ROUNDS = 10

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def heart_rate() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-22T09:30:00+00:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": UCUM, "code": "/min"},
    }


def blood_pressure_panel() -> dict[str, Any]:
    """About 2.4 KB: two components, performer, derived-from, interpretation, note, identifier."""

    def component(code: str, display: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
            "interpretation": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": "N",
                            "display": "Normal",
                        }
                    ]
                }
            ],
        }

    return {
        "resourceType": "Observation",
        "meta": {
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"]
        },
        "identifier": [
            {"use": "official", "system": "urn:example:obs", "value": "bp-2026-11-22-1"}
        ],
        "status": "final",
        "category": [
            {"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
            "text": "Blood pressure systolic and diastolic",
        },
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "effectiveDateTime": "2026-11-22T09:30:00+00:00",
        "issued": "2026-11-22T09:31:12.000+00:00",
        "performer": [{"reference": "Practitioner/dr-lee", "display": "Dr Lee"}],
        "derivedFrom": [{"reference": "DocumentReference/visit-note-1"}],
        "note": [{"text": "Seated, left arm, adult cuff, after five minutes of rest."}],
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003"}]},
        "method": {"text": "Automated oscillometric cuff"},
        "component": [
            component("8480-6", "Systolic blood pressure", 118),
            component("8462-4", "Diastolic blood pressure", 76),
        ],
    }


def resources() -> dict[str, tuple[dict[str, Any], str]]:
    lab = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 98, "unit": "mg/dL"},
    }
    order = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]
        },
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "Practitioner/dr-lee"},
        "dosageInstruction": [
            {
                "text": "1 tablet daily",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            }
        ],
    }
    allergy = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
        "patient": {"reference": "Patient/p1"},
        "criticality": "low",
    }
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        "subject": {"reference": "Patient/p1"},
    }
    telecom = {
        "resourceType": "Patient",
        "id": "p1",
        "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "mobile"}],
    }
    return {
        "heart rate": (heart_rate(), "create"),
        "bp panel 2.4 KB": (blood_pressure_panel(), "create"),
        "lab draft": (lab, "create"),
        "medication order": (order, "create"),
        "allergy": (allergy, "create"),
        "condition": (condition, "create"),
        "Patient telecom update": (telecom, "update"),
    }


def _bound(check: Callable[..., object], resource: dict[str, Any], op: str) -> Callable[[], object]:
    return lambda: check(resource, operation=op)


def measure(rows: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Each row n times in all, in ROUNDS interleaved rounds; samples in µs."""
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(ROUNDS):
        for name, call in rows.items():
            for _ in range(max(1, n // ROUNDS)):
                started = time.perf_counter_ns()
                call()
                samples[name].append((time.perf_counter_ns() - started) / 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per row")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from sidecar.validation.fhir import preload_models, validate_write
    from sidecar.validation.profiles import check_profiles, preload

    preload_models()
    started = time.perf_counter()
    preload()
    load_ms = (time.perf_counter() - started) * 1000

    rows: dict[str, Callable[[], object]] = {}
    sizes: dict[str, int] = {}
    for name, (resource, operation) in resources().items():
        op: Any = operation
        if check_profiles(resource, operation=op):
            print(f"{name}: unexpectedly refused", file=sys.stderr)
            return 1
        rows[f"check_profiles: {name}"] = _bound(check_profiles, resource, op)
        sizes[name] = len(json.dumps(resource))
    panel = json.dumps(blood_pressure_panel())
    rows["validate_write (baseline, no profiles): bp panel"] = lambda: validate_write(
        tool="fhir.create", resource_type="Observation", resource_json=panel, patient_id="p1"
    )
    for call in rows.values():  # warm-up
        for _ in range(50):
            call()
    samples = measure(rows, args.n)
    results = {
        name: {
            "p50_us": round(statistics.median(values), 1),
            "p99_us": round(statistics.quantiles(values, n=100)[98], 1),
        }
        for name, values in samples.items()
    }
    worst = max(v["p50_us"] for k, v in results.items() if k.startswith("check_profiles"))
    baseline = results["validate_write (baseline, no profiles): bp panel"]["p50_us"]
    panel_cost = results["check_profiles: bp panel 2.4 KB"]["p50_us"]
    ok = worst <= TARGET_P50_US
    summary = {
        "load_and_compile_ms": round(load_ms, 1),
        "sizes_bytes": sizes,
        "results": results,
        "worst_check_p50_us": worst,
        "panel_check_vs_validate_write": round(panel_cost / baseline, 3),
        "target_p50_us": TARGET_P50_US,
        "ok": ok,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"definitions: load and compile once, {load_ms:.1f} ms")
        print(f"{'row':58} {'p50 µs':>9} {'p99 µs':>9}")
        for name, value in results.items():
            print(f"{name:58} {value['p50_us']:>9.1f} {value['p99_us']:>9.1f}")
        print(
            f"bp panel: check_profiles adds {panel_cost:.1f} µs to validate_write's "
            f"{baseline:.1f} µs ({100 * panel_cost / baseline:.0f}%)"
        )
        print(
            f"target: every check_profiles p50 <= {TARGET_P50_US:.0f} µs: {'met' if ok else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
