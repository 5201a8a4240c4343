package chartgate.consent_test

import rego.v1

import data.chartgate.fixtures as f

codes_for(consents) := f.codes(f.consent_deny(f.with_consents(consents)))

test_active_open_consent_allows if {
	count(f.consent_deny(f.base)) == 0
}

test_no_consent_denies if {
	codes_for([]) == {"consent.missing"}
}

test_consent_for_another_purpose_denies if {
	codes_for([f.consent({"purposes": ["HPAYMT"]})]) == {"consent.missing"}
}

test_consent_of_another_patient_is_ignored if {
	codes_for([f.consent({"patient": "p-999"})]) == {"consent.missing"}
}

test_ended_consent_denies_naming_it if {
	reasons := f.consent_deny(f.with_consents([f.consent({"period": {"start_ns": 0, "end_ns": f.now_ns - 1}})]))
	f.codes(reasons) == {"consent.expired"}
	some r in reasons
	contains(r.message, "consent-1")
	r.rule == "chartgate.consent.deny"
}

test_end_bound_is_exclusive if {
	codes_for([f.consent({"period": {"start_ns": 0, "end_ns": f.now_ns}})]) == {"consent.expired"}
}

test_consent_not_yet_begun_denies if {
	codes_for([f.consent({"period": {"start_ns": f.now_ns + 1, "end_ns": 0}})]) == {"consent.not_yet_valid"}
}

test_current_bounded_period_allows if {
	codes_for([f.consent({"period": {"start_ns": f.now_ns, "end_ns": f.now_ns + 1}})]) == set()
}

test_revoked_consent_denies if {
	codes_for([f.consent({"status": "inactive"})]) == {"consent.revoked"}
}

test_rejected_consent_denies if {
	codes_for([f.consent({"status": "rejected"})]) == {"consent.rejected"}
}

test_draft_consent_denies if {
	codes_for([f.consent({"status": "draft"})]) == {"consent.not_active"}
}

test_one_covering_record_is_enough if {
	codes_for([f.consent({"id": "old", "status": "inactive"}), f.treat_consent]) == set()
}

test_training_is_not_covered_by_treatment_consent if {
	f.codes(f.consent_deny(f.patch(f.base, {"purpose_of_use": "MLTRAINING"}))) == {"consent.training_not_permitted"}
}

test_training_consent_covers_training if {
	inp := f.patch(f.base, {"purpose_of_use": "MLTRAINING", "consents": [f.consent({"purposes": ["MLTRAINING"]})]})
	count(f.consent_deny(inp)) == 0
}

test_actor_outside_consent_denies if {
	codes_for([f.consent({"actors": ["Practitioner/dr-who"]})]) == {"consent.actor_not_covered"}
}

test_consent_naming_the_agent_or_principal_allows if {
	codes_for([f.consent({"actors": ["scribe-agent"]})]) == set()
	codes_for([f.consent({"actors": ["Practitioner/dr-lee"]})]) == set()
}

test_data_class_outside_consent_denies if {
	codes_for([f.consent({"data_classes": ["Condition"]})]) == {"consent.data_class_not_covered"}
}

test_missing_purpose_denies if {
	f.codes(f.consent_deny(f.patch(f.base, {"purpose_of_use": ""}))) == {"consent.purpose_missing"}
}

test_record_without_id_still_denies_naming_no_id if {
	reasons := f.consent_deny(f.with_consents([object.remove(f.consent({"status": "inactive"}), ["id"])]))
	f.codes(reasons) == {"consent.revoked"}
	some r in reasons
	contains(r.message, "(without id)")
}

test_record_of_the_wrong_shape_covers_nothing if {
	codes_for(["consent-1"]) == {"consent.missing"}
	codes_for([f.consent({"purposes": "TREAT"})]) == {"consent.missing"}
	codes_for([f.consent({"actors": "*"})]) == {"consent.actor_not_covered"}
	codes_for([f.consent({"period": {"start_ns": "0", "end_ns": 0}})]) == {"consent.not_covering"}
	codes_for([f.consent({"period": {"start_ns": 0, "end_ns": "9999"}})]) == {"consent.not_covering"}
	codes_for([f.consent({"period": {"start_ns": null, "end_ns": null}})]) == {"consent.not_covering"}
}
