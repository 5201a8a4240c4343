package chartgate.decision_test

import rego.v1

import data.chartgate.decision
import data.chartgate.fixtures as f

# Decision-level tests replace the modules' results (`with data.<rule> as <value>`) rather than
# the whole input: what is tested here is how the decision combines them. Whole decisions from
# whole inputs are covered by tests/policy/corpus on every engine.
admin_update := f.write("update", "Patient", ["telecom"], [])

medication_order := f.write("create", "MedicationRequest", ["intent", "medicationCodeableConcept", "status", "subject"], [])

decide(inp, cfg) := d if {
	d := decision.decision with input as inp with data.chartgate_config as cfg
}

no_settings := f.default_config

settings(tenant) := f.tenant_config(tenant)

test_allowed_write_carries_tier_reasons_and_obligations if {
	decide(f.base, no_settings) == {
		"allow": true,
		"tier": "approval",
		"reasons": [{"code": "tier.approval", "message": "a drafted Observation needs one approval", "rule": "chartgate.tiers.whitelist"}],
		"obligations": {
			"token_ttl_seconds": 60,
			"approvals_required": 1,
			"approver_roles": ["clinician"],
			"approval_expiry_seconds": 86400,
		},
	}
}

test_any_deny_blocks_and_lists_every_reason if {
	inp := f.patch(f.base, {"consents": [], "agent": f.agent([])})
	d := decide(inp, no_settings)
	d.allow == false
	d.tier == "blocked"
	[r.code | some r in d.reasons] == ["consent.missing", "scope.missing"]
	d.obligations == {"token_ttl_seconds": 0, "approvals_required": 0, "approver_roles": [], "approval_expiry_seconds": 0}
}

# Nothing denied, yet no obligations for the tier (here the library lost its table): blocked.
test_no_obligations_and_no_deny_still_blocks if {
	lost := f.patch(data.chartgate_library, {"obligations": object.remove(data.chartgate_library.obligations, ["approval"])})
	d := decision.decision with input as f.base with data.chartgate_library as lost
	d.allow == false
	d.tier == "blocked"
	[r.code | some r in d.reasons] == ["policy.incomplete"]
}

test_medication_order_goes_to_prescribers if {
	decide(medication_order, no_settings).obligations == {
		"token_ttl_seconds": 60,
		"approvals_required": 2,
		"approver_roles": ["prescriber"],
		"approval_expiry_seconds": 43200,
	}
}

test_autonomous_write_has_no_approvers if {
	d := decide(admin_update, no_settings)
	d.tier == "autonomous"
	d.obligations == {"token_ttl_seconds": 60, "approvals_required": 0, "approver_roles": [], "approval_expiry_seconds": 0}
}

test_tenant_shortens_token_and_approval_lifetimes if {
	d := decide(f.base, settings({"token_ttl_seconds": 30, "approval_expiry_seconds": 3600}))
	d.obligations.token_ttl_seconds == 30
	d.obligations.approval_expiry_seconds == 3600
}

test_tenant_cannot_lengthen_lifetimes if {
	d := decide(f.base, settings({"token_ttl_seconds": 600, "approval_expiry_seconds": 999999}))
	d.obligations.token_ttl_seconds == 60
	d.obligations.approval_expiry_seconds == 86400
}

test_tenant_names_approver_roles if {
	d := decide(f.base, settings({"approver_roles": {"Observation": ["nurse"]}}))
	d.obligations.approver_roles == ["nurse"]
	other := decide(medication_order, settings({"approver_roles": {"Observation": ["nurse"]}}))
	other.obligations.approver_roles == ["prescriber"]
}

test_malformed_input_gets_its_own_reason if {
	d := decision.decision with input as f.patch(f.base, {"action": {}})
	[r.code | some r in d.reasons] == ["input.malformed"]
}

test_well_formed_base_is_decided if {
	d := decision.decision with input as f.base
	d.allow == true
	d.tier == "approval"
}
