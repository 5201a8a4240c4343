package chartgate.decision_test

import rego.v1

import data.chartgate.decision

# Decision-level tests replace the modules' results (`with data.<rule> as <value>`) rather than
# the whole input: what is tested here is how the decision combines them. Whole decisions from
# whole inputs are covered by tests/policy/corpus on every engine.
allowed_reason := {"code": "tier.approval", "message": "a drafted Observation needs one approval", "rule": "chartgate.tiers.whitelist"}

consent_reason := {"code": "consent.missing", "message": "no consent", "rule": "chartgate.consent.deny"}

scope_reason := {"code": "scope.missing", "message": "no scope", "rule": "chartgate.scopes.deny"}

# The decision for a write of `rtype` in `tier`, with the given module reasons and settings.
decide(tier, rtype, consent_deny, scope_deny, cfg) := d if {
	explain := {allowed_reason}
	action := {"operation": "create", "resource_type": rtype, "tool": "fhir.create", "fields": ["code"]}
	d := decision.decision with data.chartgate.tiers.tier as tier
		with data.chartgate.tiers.explain as explain
		with data.chartgate.tiers.deny as set()
		with data.chartgate.consent.deny as consent_deny
		with data.chartgate.scopes.deny as scope_deny
		with data.chartgate.fields.deny as set()
		with data.chartgate.switches.deny as set()
		with input.action as action
		with input.agent as {"id": "scribe-agent", "scopes": []}
		with input.patient as {"id": "p-123"}
		with input.tenant as {"id": "st-mary"}
		with data.chartgate_config as cfg
}

no_settings := {"tenants": {}, "switches": {}}

settings(tenant) := {"tenants": {"st-mary": tenant}, "switches": {}}

test_allowed_write_carries_tier_reasons_and_obligations if {
	d := decide("approval", "Observation", set(), set(), no_settings)
	d == {
		"allow": true,
		"tier": "approval",
		"reasons": [allowed_reason],
		"obligations": {
			"token_ttl_seconds": 60,
			"approvals_required": 1,
			"approver_roles": ["clinician"],
			"approval_expiry_seconds": 86400,
		},
	}
}

test_any_deny_blocks_and_lists_every_reason if {
	d := decide("approval", "Observation", {consent_reason}, {scope_reason}, no_settings)
	d.allow == false
	d.tier == "blocked"
	d.reasons == [consent_reason, scope_reason]
	d.obligations.approvals_required == 0
	d.obligations.approver_roles == []
}

# Nothing denied, yet no tier (here: none the obligations table knows): still blocked.
test_no_tier_and_no_deny_still_blocks if {
	d := decide("unheard-of", "Observation", set(), set(), no_settings)
	d.allow == false
	d.tier == "blocked"
	[r.code | some r in d.reasons] == ["policy.incomplete"]
}

test_medication_order_goes_to_prescribers if {
	d := decide("dual_approval", "MedicationRequest", set(), set(), no_settings)
	d.obligations == {
		"token_ttl_seconds": 60,
		"approvals_required": 2,
		"approver_roles": ["prescriber"],
		"approval_expiry_seconds": 43200,
	}
}

test_autonomous_write_has_no_approvers if {
	d := decide("autonomous", "Patient", set(), set(), no_settings)
	d.obligations == {"token_ttl_seconds": 60, "approvals_required": 0, "approver_roles": [], "approval_expiry_seconds": 0}
}

test_tenant_shortens_token_and_approval_lifetimes if {
	d := decide("approval", "Observation", set(), set(), settings({"token_ttl_seconds": 30, "approval_expiry_seconds": 3600}))
	d.obligations.token_ttl_seconds == 30
	d.obligations.approval_expiry_seconds == 3600
}

test_tenant_cannot_lengthen_lifetimes if {
	d := decide("approval", "Observation", set(), set(), settings({"token_ttl_seconds": 600, "approval_expiry_seconds": 999999}))
	d.obligations.token_ttl_seconds == 60
	d.obligations.approval_expiry_seconds == 86400
}

test_tenant_names_approver_roles if {
	d := decide("approval", "Observation", set(), set(), settings({"approver_roles": {"Observation": ["nurse"]}}))
	d.obligations.approver_roles == ["nurse"]
	other := decide("approval", "Condition", set(), set(), settings({"approver_roles": {"Observation": ["nurse"]}}))
	other.obligations.approver_roles == ["clinician"]
}

test_malformed_input_gets_its_own_reason if {
	codes := {r.code | some r in decision.malformed} with input.action as {}
	codes == {"input.malformed"}
	count(decision.malformed) == 0 with input.action as {"operation": "create", "resource_type": "Observation", "tool": "fhir.create", "fields": []}
		with input.agent as {"id": "a", "scopes": []}
		with input.tenant as {"id": "t"}
		with input.patient as {"id": "p"}
}
