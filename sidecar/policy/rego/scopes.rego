# SMART App Launch v2 scopes: a grant in input.agent.grants (the agent's configured scopes,
# parsed by the sidecar when its configuration loads: chartgate/smart_scope.py) must allow the
# operation (create -> c, update -> u) on the resource type, and a granular scope's filter
# ("patient/Observation.c?category=<system>|<code>") must match what is submitted.
package chartgate.scopes

import rego.v1

rule := "chartgate.scopes.deny"

letter := data.chartgate_library.scope_letters[input.action.operation]

# Grants of this operation on this type (or on every type).
candidates contains g if {
	some g in input.agent.grants
	g.type in [input.action.resource_type, "*"]
	is_string(g.permissions)
	contains(g.permissions, letter)
	is_array(g.filter)
}

# A grant without a filter allows; one with a filter allows when every parameter matches, and a
# parameter matches when one of its values does. Written inline (no helper per parameter): on
# the embedded engine a function call costs more than the statements it holds.
ok if {
	some g in candidates
	g.filter == []
} else := true if {
	some g in candidates
	every param in g.filter {
		is_array(param.values)
		some value in param.values
		some coding in searchable[param.name]
		token_matches(coding, value)
	}
}

# What each search parameter is matched against: `category` and `code` the codings of the
# submitted resource, `status` its status (as a coding without a system). Any other parameter
# matches nothing.
searchable := {
	"category": input.action.summary.category,
	"code": input.action.summary.code,
	"status": [{"system": "", "code": input.action.summary.status}],
}

# FHIR token search: a value's system and code are each either null ("any") or what the coding
# must have ("" for "no system", as in `|code`).
token_matches(coding, value) if {
	value.system in [null, coding.system]
	value.code in [null, coding.code]
}

# Reasons are only worked out when no grant allows the write.
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
			" of ", input.action.resource_type, ": ", concat(" ", sort([g.scope | some g in candidates])),
		]),
		"rule": rule,
	}
}
