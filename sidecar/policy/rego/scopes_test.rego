package chartgate.scopes_test

import rego.v1

import data.chartgate.fixtures as f

scoped(scopes) := f.patch(f.base, {"agent": f.agent(scopes)})

codes_for(scopes) := f.codes(f.scopes_deny(scoped(scopes)))

test_filtered_scope_matching_the_category_allows if {
	count(f.scopes_deny(f.base)) == 0
}

test_plain_scope_allows if {
	codes_for(["patient/Observation.c"]) == set()
}

test_no_scope_denies if {
	codes_for([]) == {"scope.missing"}
}

test_scope_for_another_type_denies if {
	codes_for(["patient/Condition.c", "patient/Patient.u"]) == {"scope.missing"}
}

test_read_scope_does_not_allow_create if {
	codes_for(["patient/Observation.rs"]) == {"scope.missing"}
}

test_update_needs_u if {
	inp := f.patch(f.write("update", "Patient", ["telecom"], []), {"agent": f.agent(["patient/Patient.c"])})
	f.codes(f.scopes_deny(inp)) == {"scope.missing"}
	ok := f.patch(inp, {"agent": f.agent(["patient/Patient.ru"])})
	count(f.scopes_deny(ok)) == 0
}

test_wildcard_and_contexts_allow if {
	codes_for(["patient/*.cruds"]) == set()
	codes_for(["user/Observation.cu"]) == set()
	codes_for(["system/*.c"]) == set()
}

test_grants_of_the_wrong_shape_grant_nothing if {
	broken := [
		{"scope": "a", "context": "patient", "type": "Observation", "permissions": 7, "filter": []},
		{"scope": "b", "context": "patient", "type": "Observation", "permissions": "c", "filter": "x"},
		{"scope": "c", "type": "Observation", "permissions": "c"},
		"patient/Observation.c",
	]
	inp := f.patch(f.base, {"agent": {"id": "scribe-agent", "tenant": "st-mary", "scopes": [], "grants": broken}})
	f.codes(f.scopes_deny(inp)) == {"scope.missing"}
}

test_filter_mismatch_denies_with_its_own_code if {
	inp := f.patch(scoped([f.vital_scope]), {"action": f.action("create", "Observation", f.vital_fields, f.laboratory)})
	reasons := f.scopes_deny(inp)
	f.codes(reasons) == {"scope.filter_mismatch"}
	f.rules(reasons) == {"chartgate.scopes.deny"}
}

test_filter_on_code_only_and_system_only if {
	codes_for(["patient/Observation.c?category=vital-signs"]) == set()
	codes_for([concat("", ["patient/Observation.c?category=", f.observation_category, "|"])]) == set()
	codes_for(["patient/Observation.c?category=laboratory"]) == {"scope.filter_mismatch"}
	codes_for(["patient/Observation.c?category=http://example.org|vital-signs"]) == {"scope.filter_mismatch"}
}

test_filter_alternatives_and_conjunction if {
	codes_for(["patient/Observation.c?category=laboratory,vital-signs"]) == set()
	codes_for(["patient/Observation.c?category=vital-signs&status=final"]) == set()
	codes_for(["patient/Observation.c?category=vital-signs&status=preliminary"]) == {"scope.filter_mismatch"}
}

test_unknown_filter_parameter_matches_nothing if {
	codes_for(["patient/Observation.c?performer=x"]) == {"scope.filter_mismatch"}
}

test_one_matching_scope_is_enough if {
	codes_for(["patient/Observation.c?category=laboratory", "patient/Observation.c"]) == set()
}
