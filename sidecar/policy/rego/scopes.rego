# SMART App Launch v2 scopes: a granted scope in input.agent.scopes must allow the operation
# (create -> c, update -> u) on the resource type, and a granular scope's filter
# ("patient/Observation.c?category=<system>|<code>") must match what is submitted.
package chartgate.scopes

import rego.v1

rule := "chartgate.scopes.deny"

letter := data.chartgate_library.scope_letters[input.action.operation]

# <patient|user|system>/<Type or *>.<permissions>[?<filter>], permissions an ordered subset of
# "cruds" (the table maps each to the letters it grants). A scope that does not parse grants
# nothing. One regular expression per scope: on the embedded engine every expression costs
# microseconds, and this is a fifth of the statements of splitting by hand.
pattern := `^(patient|user|system)/([A-Za-z]+|\*)\.([cruds]{1,5})(?:\?([^?]*))?$`

# Granted scopes that allow the operation on the type, with their filter ("" when none).
candidates contains [scope, m[4]] if {
	some scope in input.agent.scopes
	is_string(scope)
	some m in regex.find_all_string_submatch_n(pattern, scope, 1)
	m[2] in [input.action.resource_type, "*"]
	data.chartgate_library.scope_permissions[m[3]][letter]
}

ok if {
	some candidate in candidates
	candidate[1] == ""
}

# A scope with a filter grants when every parameter matches ("a=1&b=2"), and a parameter
# matches when one of its comma-separated alternatives does.
ok if {
	some candidate in candidates
	candidate[1] != ""
	every param in split(candidate[1], "&") {
		param_matches(param)
	}
}

param_matches(param) if {
	name_value := split(param, "=")
	count(name_value) == 2
	some value in split(name_value[1], ",")
	token_matches(name_value[0], value)
}

token_matches("category", value) if {
	some coding in input.action.summary.category
	coding_matches(coding, value)
}

token_matches("code", value) if {
	some coding in input.action.summary.code
	coding_matches(coding, value)
}

token_matches("status", value) if input.action.summary.status == value

# FHIR token search: "code" (any system), "system|code", "system|" (any code), "|code" (no
# system). Codings are {"system": string, "code": string} (the sidecar builds them).
coding_matches(coding, value) if {
	not contains(value, "|")
	coding.code == value
}

coding_matches(coding, value) if {
	system_code := split(value, "|")
	count(system_code) == 2
	coding.system == system_code[0]
	system_code[1] in ["", coding.code]
}

# Reasons are only worked out when no scope matches.
deny := set() if ok

else := problems

problems contains r if {
	count(candidates) == 0
	r := {
		"code": "scope.missing",
		"message": concat("", [
			"no granted SMART scope allows ", input.action.operation, " of ", input.action.resource_type,
			" (e.g. patient/", input.action.resource_type, ".", object.get(data.chartgate_library.scope_letters, input.action.operation, "?"), ")",
		]),
		"rule": rule,
	}
}

problems contains r if {
	count(candidates) > 0
	r := {
		"code": "scope.filter_mismatch",
		"message": concat("", [
			"the submitted resource matches the filter of no granted scope for ", input.action.operation,
			" of ", input.action.resource_type, ": ", concat(" ", sort([candidate[0] | some candidate in candidates])),
		]),
		"rule": rule,
	}
}
