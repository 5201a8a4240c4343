# Field allowlists: per operation and resource type, the elements an agent may set
# (input.action.fields: top-level element names, and `meta.<element>` for what it sets inside
# meta); others deny, naming them. The lists live in data.chartgate_library.fields
# (data.json): policy, not operator settings. Never listed: identifier (the adapter stamps its
# own), extension and modifierExtension (meaning a reviewer cannot see), contained, meta
# (security labels, tags, profiles), text (narrative a reviewer cannot check against the data),
# Patient elements other than the administrative ones. Security labels and narrative get reasons
# of their own. Writes without a list are not whitelisted at all (chartgate.tiers blocks them).
package chartgate.fields

import rego.v1

rule := "chartgate.fields.deny"

key := concat(":", [input.action.operation, input.action.resource_type])

allowed := data.chartgate_library.fields[key]

# All fields listed: object.filter keeps the allowlist entries the fields name, one builtin call
# rather than a Rego loop (every statement evaluated costs time on the embedded engine).
# Writes without an allowlist are left to chartgate.tiers, which blocks them.
ok if {
	count(input.action.fields) > 0
	count(object.filter(allowed, input.action.fields)) == count(input.action.fields)
} else := true if {
	not data.chartgate_library.fields[key]
}

deny := set() if ok

else := problems if count(problems) > 0

else := {{"code": "fields.not_allowed", "message": "the fields set are not allowed", "rule": rule}}

special := data.chartgate_library.special_fields

outside contains f if {
	some f in input.action.fields
	is_string(f)
	not allowed[f]
	not special[f]
}

problems contains r if {
	some f in input.action.fields
	not is_string(f)
	r := {"code": "fields.malformed", "message": "action.fields holds a value that is not a field name", "rule": rule}
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

# Security labels, narrative and the like: each with its own code and message (data.json).
problems contains r if {
	some f in input.action.fields
	not allowed[f]
	r := special[f]
}

problems contains r if {
	count(input.action.fields) == 0
	r := {
		"code": "fields.empty",
		"message": concat("", ["the ", input.action.operation, " of ", input.action.resource_type, " sets no fields"]),
		"rule": rule,
	}
}
