# SMART App Launch v2 scopes: a granted scope in input.agent.scopes must allow the operation
# (create -> c, update -> u) on the resource type, and a granular scope's filter
# ("patient/Observation.c?category=<system>|<code>") must match what is submitted.
package chartgate.scopes

import rego.v1

rule := "chartgate.scopes.deny"

letter := data.chartgate_library.scope_letters[input.action.operation]

# Granted scopes that allow the operation on the type, with their filter ("" when none):
# <patient|user|system>/<Type or *>.<ordered subset of cruds>[?filter]. A scope that does not
# parse grants nothing.
#
# Written flat on purpose: on the embedded engine (rego-cpp 1.5.2) every expression, function
# call and array-destructuring pattern costs microseconds per decision (docs/policy.md, "Cost").
candidates contains [scope, filter] if {
	some scope in named_scopes
	parts := split(scope, "?")
	count(parts) <= 2
	base := split(parts[0], ".")
	count(base) == 2
	path := split(base[0], "/")
	count(path) == 2
	data.chartgate_library.scope_contexts[path[0]]
	path[1] in [input.action.resource_type, "*"]
	# The table maps each ordered subset of "cruds" to the letters it grants.
	data.chartgate_library.scope_permissions[base[1]][letter]
	filter := concat("", array.slice(parts, 1, 2))
}

# A cheap first cut: scopes for other types are never parsed.
type_marker := concat("", ["/", input.action.resource_type, "."])

named_scopes contains scope if {
	some scope in input.agent.scopes
	contains(scope, type_marker)
}

named_scopes contains scope if {
	some scope in input.agent.scopes
	contains(scope, "/*.")
}

# A scope without a filter grants; one with a filter grants when every parameter matches
# ("a=1&b=2"), and a parameter matches when one of its comma-separated alternatives does.
matches if {
	some candidate in candidates
	candidate[1] == ""
}

matches if {
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
# system). Indexing, not `[system, code] := split(...)`: rego-cpp evaluates an array pattern an
# order of magnitude slower.
coding_matches(coding, value) if {
	not contains(value, "|")
	coding.code == value
}

coding_matches(coding, value) if {
	system_code := split(value, "|")
	count(system_code) == 2
	object.get(coding, "system", "") == system_code[0]
	system_code[1] in ["", object.get(coding, "code", "")]
}

# Reasons are only worked out when no scope matches (every rule evaluated costs time on the
# embedded engine).
deny := set() if matches

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
