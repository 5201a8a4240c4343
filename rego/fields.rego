# Field allowlists: per operation and resource type, the top-level elements an agent may set
# (input.action.fields); others deny, naming them. The lists live in
# data.chartgate_library.fields (rego/data.json): policy, not operator settings. Never listed:
# identifier (the adapter stamps its own), extension and modifierExtension (meaning a reviewer
# cannot see), Patient elements other than the administrative ones. Writes without a list are
# not whitelisted at all (chartgate.tiers blocks them).
package chartgate.fields

import rego.v1

rule := "chartgate.fields.deny"

key := concat(":", [input.action.operation, input.action.resource_type])

# All fields listed (object.filter keeps the allowlist entries the fields name): one builtin call
# rather than a Rego loop, which costs far more on the embedded engine.
deny := set() if {
	count(input.action.fields) > 0
	count(object.filter(data.chartgate_library.fields[key], input.action.fields)) == count(input.action.fields)
} else := problems

outside contains f if {
	allowed := data.chartgate_library.fields[key]
	some f in input.action.fields
	not allowed[f]
}

problems contains r if {
	count(outside) > 0
	r := {
		"code": "fields.not_allowed",
		"message": concat("", [
			"an agent may not set these fields on ", input.action.operation, " of ",
			input.action.resource_type, ": ", concat(", ", sort(outside)),
		]),
		"rule": rule,
	}
}

problems contains r if {
	count(input.action.fields) == 0
	data.chartgate_library.fields[key]
	r := {
		"code": "fields.empty",
		"message": concat("", ["the ", input.action.operation, " of ", input.action.resource_type, " sets no fields"]),
		"rule": rule,
	}
}
