package chartgate.fields_test

import rego.v1

import data.chartgate.fixtures as f

field_codes(op, rtype, fields) := f.codes(f.fields_deny(f.write(op, rtype, fields, [])))

test_listed_fields_allow if {
	count(f.fields_deny(f.base)) == 0
}

test_identifier_is_not_allowed_and_named if {
	reasons := f.fields_deny(f.write("create", "Observation", ["code", "identifier", "status"], []))
	f.codes(reasons) == {"fields.not_allowed"}
	some r in reasons
	endswith(r.message, ": identifier")
	r.rule == "chartgate.fields.deny"
}

test_several_fields_are_named_sorted if {
	some r in f.fields_deny(f.write("create", "Observation", ["modifierExtension", "code", "extension"], []))
	endswith(r.message, ": extension, modifierExtension")
}

test_patient_update_limited_to_administrative_fields if {
	field_codes("update", "Patient", ["address", "telecom"]) == set()
	field_codes("update", "Patient", ["name", "telecom"]) == {"fields.not_allowed"}
}

test_no_fields_denies if {
	field_codes("create", "Condition", []) == {"fields.empty"}
}

test_attesting_a_document_is_not_for_agents if {
	field_codes("create", "DocumentReference", ["authenticator", "content", "status"]) == {"fields.not_allowed"}
}

test_unlisted_writes_are_left_to_tiers if {
	field_codes("create", "AllergyIntolerance", ["code"]) == set()
}
