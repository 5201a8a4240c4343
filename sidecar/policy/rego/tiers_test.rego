package chartgate.tiers_test

import rego.v1

import data.chartgate.fixtures as f

vitals_at(threshold) := f.tenant_config({"autonomous_vital_signs_min_confidence": threshold})

# The tier and the codes explaining it.
tier(inp, cfg) := [f.tier_of(inp, cfg), f.codes(f.tier_explain(inp, cfg))]

admin_update := f.write("update", "Patient", ["telecom"], [])

test_patient_administrative_update_is_autonomous if {
	tier(admin_update, f.default_config) == ["autonomous", {"tier.autonomous"}]
}

test_observation_draft_needs_approval if {
	tier(f.base, f.default_config) == ["approval", {"tier.approval"}]
}

test_vital_signs_autonomous_at_tenant_threshold if {
	tier(f.base, vitals_at(0.9)) == ["autonomous", {"tier.autonomous"}]
	f.rules(f.tier_explain(f.base, vitals_at(0.93))) == {"chartgate.tiers.vital_signs_autonomous"}
}

test_vital_signs_below_threshold_need_approval if {
	tier(f.base, vitals_at(0.95)) == ["approval", {"tier.approval"}]
}

test_vital_signs_without_setting_need_approval if {
	tier(f.base, f.tenant_config({})) == ["approval", {"tier.approval"}]
	tier(f.base, f.tenant_config({"autonomous_vital_signs_min_confidence": "0.5"})) == ["approval", {"tier.approval"}]
}

test_batch_mode_never_autonomous if {
	tier(f.patch(f.base, {"mode": "batch"}), vitals_at(0.5)) == ["approval", {"tier.approval"}]
	tier(f.patch(admin_update, {"mode": "batch"}), f.default_config) == ["approval", {"tier.batch_mode"}]
}

test_laboratory_observation_is_not_autonomous if {
	tier(f.write("create", "Observation", f.vital_fields, f.laboratory), vitals_at(0.5)) == ["approval", {"tier.approval"}]
	mixed := array.concat(f.vital_signs, f.laboratory)
	tier(f.write("create", "Observation", f.vital_fields, mixed), vitals_at(0.5)) == ["approval", {"tier.approval"}]
}

test_medication_order_needs_dual_approval if {
	tier(f.write("create", "MedicationRequest", ["intent", "status"], []), f.default_config) == ["dual_approval", {"tier.dual_approval"}]
}

test_problem_list_entry_needs_dual_approval if {
	problem := [{"system": f.condition_category, "code": "problem-list-item"}]
	inp := f.write("create", "Condition", ["category", "code", "subject"], problem)
	tier(inp, f.default_config) == ["dual_approval", {"tier.dual_approval"}]
	f.rules(f.tier_explain(inp, f.default_config)) == {"chartgate.tiers.category"}
}

test_encounter_diagnosis_draft_needs_approval if {
	diagnosis := [{"system": f.condition_category, "code": "encounter-diagnosis"}]
	tier(f.write("create", "Condition", ["category", "code"], diagnosis), f.default_config) == ["approval", {"tier.approval"}]
}

test_condition_update_needs_dual_approval if {
	tier(f.write("update", "Condition", ["clinicalStatus"], []), f.default_config) == ["dual_approval", {"tier.dual_approval"}]
}

test_document_draft_and_amendment if {
	tier(f.write("create", "DocumentReference", ["content"], []), f.default_config) == ["approval", {"tier.approval"}]
	tier(f.write("update", "DocumentReference", ["content"], []), f.default_config) == ["dual_approval", {"tier.dual_approval"}]
}

unlisted(inp) if {
	not f.tier_of(inp, f.default_config)
	f.codes(f.tiers_deny(inp, f.default_config)) == {"tier.not_whitelisted"}
}

test_unlisted_writes_are_blocked if {
	unlisted(f.write("create", "AllergyIntolerance", ["code"], []))
	unlisted(f.write("update", "Observation", ["status"], []))
	unlisted(f.write("create", "Patient", ["telecom"], []))
}

test_whitelisted_writes_are_not_denied if {
	count(f.tiers_deny(f.base, f.default_config)) == 0
}

test_tenant_override_makes_stricter if {
	cfg := f.tenant_config({"tier_overrides": {"create:Observation": "dual_approval"}})
	tier(f.base, cfg) == ["dual_approval", {"tier.tenant_override"}]
}

test_tenant_override_cannot_loosen if {
	cfg := f.tenant_config({"tier_overrides": {"create:MedicationRequest": "autonomous"}})
	tier(f.write("create", "MedicationRequest", ["intent"], []), cfg) == ["dual_approval", {"tier.dual_approval"}]
}

test_tenant_override_can_block if {
	cfg := f.tenant_config({"tier_overrides": {"create:Observation": "blocked"}})
	f.codes(f.tiers_deny(f.base, cfg)) == {"tier.tenant_blocked"}
}

test_unknown_override_denies if {
	cfg := f.tenant_config({"tier_overrides": {"create:Observation": "lenient"}})
	f.codes(f.tiers_deny(f.base, cfg)) == {"tier.invalid_override"}
}

# The whitelist's precomputed reasons (data, so the usual path builds no object) must say the
# tier their entry has.
test_whitelist_reasons_match_their_tiers if {
	lib := data.chartgate_library
	every _, entry in lib.whitelist {
		lib.levels[entry.tier] < 3
		entry.reason.code == concat(".", ["tier", entry.tier])
		entry.reason.rule == "chartgate.tiers.whitelist"
		every _, t in object.get(entry, "category_tiers", {}) {
			t.reason.code == concat(".", ["tier", t.tier])
		}
	}
	lib.vital_signs.reason.code == "tier.autonomous"
	every tier in lib.order {
		lib.levels[tier] >= 0
	}
}

test_field_allowlists_cover_exactly_the_whitelist if {
	lib := data.chartgate_library
	object.keys(lib.fields) == object.keys(lib.whitelist)
	every _, allowed in lib.fields {
		not allowed.identifier
		not allowed.extension
		not allowed.modifierExtension
	}
}
