# Shared fixtures for the policy tests: a valid base input (docs/policy.md) and helpers that run
# the decision on a variant of it. Loaded only with the tests (the file ends in _test.rego).
package chartgate.fixtures

import rego.v1

now_ns := 1795377600000000000

observation_category := "http://terminology.hl7.org/CodeSystem/observation-category"

condition_category := "http://terminology.hl7.org/CodeSystem/condition-category"

vital_signs := [{"system": observation_category, "code": "vital-signs"}]

laboratory := [{"system": observation_category, "code": "laboratory"}]

vital_scope := concat("", ["patient/Observation.c?category=", observation_category, "|vital-signs"])

# The agent with these scopes, and the grants the sidecar parses them into (chartgate/smart_scope.py
# does that in the product; this test-only copy keeps the tests readable as scope strings).
agent(scopes) := {"id": "scribe-agent", "tenant": "st-mary", "scopes": scopes, "grants": [grant(s) | some s in scopes]}

grant(scope) := g if {
	m := regex.find_all_string_submatch_n(`^(patient|user|system)/([A-Za-z]+|\*)\.([cruds]+)(?:\?(.*))?$`, scope, 1)[0]
	g := {"scope": scope, "context": m[1], "type": m[2], "permissions": m[3], "filter": filter_of(m[4])}
}

filter_of("") := []

filter_of(query) := [{"name": nv[0], "values": [token(v) | some v in split(nv[1], ",")]} |
	some param in split(query, "&")
	nv := split(param, "=")
] if query != ""

token(v) := {"system": null, "code": v} if not contains(v, "|")

token(v) := {"system": sc[0], "code": code_or_any(sc[1])} if {
	contains(v, "|")
	sc := split(v, "|")
}

code_or_any("") := null

code_or_any(c) := c if c != ""

# An action of the documented shape; `code` is a LOINC heart rate the reasons must never echo.
action(op, rtype, fields, categories) := {
	"tool": concat(".", ["fhir", op]),
	"operation": op,
	"resource_type": rtype,
	"target": rtype,
	"fields": fields,
	"summary": {"status": "final", "category": categories, "code": [{"system": "http://loinc.org", "code": "8867-4"}]},
	"payload_sha256": "00",
}

vital_fields := ["category", "code", "status", "subject", "valueQuantity"]

treat_consent := {
	"id": "consent-1",
	"patient": "p-123",
	"status": "active",
	"purposes": ["TREAT"],
	"actors": ["*"],
	"data_classes": ["*"],
	"period": {"start_ns": 0, "end_ns": 0},
}

base := {
	"time": {"now_ns": now_ns, "rfc3339": "2026-11-22T20:00:00+00:00"},
	"agent": agent([vital_scope, "patient/Patient.u"]),
	"action": action("create", "Observation", vital_fields, vital_signs),
	"patient": {"id": "p-123"},
	"encounter": {"id": "enc-9"},
	"purpose_of_use": "TREAT",
	"on_behalf_of": "Practitioner/dr-lee",
	"consents": [treat_consent],
	"tenant": {"id": "st-mary"},
	"model": {"version": "scribe-2026-10", "prompt_version": "p-41"},
	"confidence": 0.93,
	"mode": "live",
	"evidence_refs": ["DocumentReference/abc"],
	"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
}

# Replace top-level members (not a deep merge: a nested object is replaced whole).
patch(obj, changes) := object.union(object.remove(obj, object.keys(changes)), changes)

# The base input for a write of any type, with scopes that grant create and update on all.
write(op, rtype, fields, categories) := patch(base, {
	"action": action(op, rtype, fields, categories),
	"agent": agent(["patient/*.cu"]),
})

with_consents(consents) := patch(base, {"consents": consents})

consent(changes) := patch(treat_consent, changes)

switches_default := data.chartgate_library.switches_default

config(tenant_settings, switches) := {"tenants": {"st-mary": tenant_settings}, "switches": switches}

tenant_config(settings) := config(settings, switches_default)

switch_config(switches) := config({}, patch(switches_default, switches))

# Module results for an input, with the library's data or with operator settings replaced.
# Tests target the modules; tests/policy/corpus covers whole decisions on every engine.
consent_deny(inp) := result if {
	result := data.chartgate.consent.deny with input as inp
}

scopes_deny(inp) := result if {
	result := data.chartgate.scopes.deny with input as inp
}

fields_deny(inp) := result if {
	result := data.chartgate.fields.deny with input as inp
}

switches_deny(inp, cfg) := result if {
	result := data.chartgate.switches.deny with input as inp with data.chartgate_config as cfg
}

tier_of(inp, cfg) := result if {
	result := data.chartgate.tiers.tier with input as inp with data.chartgate_config as cfg
}

tier_explain(inp, cfg) := result if {
	result := data.chartgate.tiers.explain with input as inp with data.chartgate_config as cfg
}

tiers_deny(inp, cfg) := result if {
	result := data.chartgate.tiers.deny with input as inp with data.chartgate_config as cfg
}

default_config := {"tenants": {}, "switches": switches_default}

codes(reasons) := {r.code | some r in reasons}

rules(reasons) := {r.rule | some r in reasons}
