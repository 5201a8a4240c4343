# Consent: an active, current consent record of the patient covers the purpose of use, the actor
# (the agent or the person it acts for) and the data class (resource type).
#
# Evaluated only on a well-formed input (chartgate.decision checks the types of every member
# first), so input members are of their documented types here. Consent records are checked one
# by one: a record of the wrong shape covers nothing, identically on every engine (a type is
# checked before each comparison, iteration and builtin call; docs/policy.md, "Writing policy").
package chartgate.consent

import rego.v1

rule := "chartgate.consent.deny"

now := input.time.now_ns

# One flat body: on the embedded engine each statement and each function call costs time, and
# this runs on every proposal.
ok if {
	some c in input.consents
	c.patient == input.patient.id
	c.status == "active"
	is_array(c.purposes)
	input.purpose_of_use in c.purposes
	is_number(c.period.start_ns)
	c.period.start_ns <= now
	not_ended(c.period.end_ns)
	actor_listed(c.actors)
	class_listed(c.data_classes)
}

# An end of 0 means open; otherwise the end is exclusive.
not_ended(end) if {
	end == 0
} else := true if {
	is_number(end)
	now < end
}

actor_listed(listed) if {
	"*" in listed
} else := true if {
	is_array(listed)
	some actor in listed
	actor in actors
}

actors := ["*", input.agent.id, input.on_behalf_of] if input.on_behalf_of != ""

else := ["*", input.agent.id]

class_listed(listed) if {
	"*" in listed
} else := true if {
	input.action.resource_type in listed
}

# Reasons are only worked out when no record covers the request.
deny := set() if ok

else := problems if count(problems) > 0

else := {not_covering}

not_covering := {"code": "consent.not_covering", "message": "no consent record of the patient covers this request", "rule": rule}

for_purpose contains c if {
	some c in input.consents
	c.patient == input.patient.id
	is_array(c.purposes)
	input.purpose_of_use in c.purposes
}

name(c) := id if {
	id := c.id
	is_string(id)
} else := "(without id)"

problems contains r if {
	input.purpose_of_use == ""
	r := {"code": "consent.purpose_missing", "message": "the request names no purpose of use", "rule": rule}
}

problems contains r if {
	count(for_purpose) == 0
	input.purpose_of_use != ""
	input.purpose_of_use != "MLTRAINING"
	r := {
		"code": "consent.missing",
		"message": concat("", ["patient ", input.patient.id, " has no consent record for purpose ", input.purpose_of_use]),
		"rule": rule,
	}
}

problems contains r if {
	count(for_purpose) == 0
	input.purpose_of_use == "MLTRAINING"
	r := {
		"code": "consent.training_not_permitted",
		"message": concat("", [
			"patient ", input.patient.id,
			" has no consent for AI model training (MLTRAINING), a purpose of its own that a consent for another purpose does not cover",
		]),
		"rule": rule,
	}
}

problems contains r if {
	some c in for_purpose
	c.status != "active"
	r := {
		"code": status_code(c.status),
		"message": concat("", ["consent ", name(c), " is not active"]),
		"rule": rule,
	}
}

# The lookup sits in the body, not in the head: with a head value that is undefined, OPA takes
# the `else` and regorus answers undefined (found by the parity suite).
status_code(status) := code if {
	is_string(status)
	code := data.chartgate_library.consent_status_codes[status]
} else := "consent.not_active"

problems contains r if {
	some c in for_purpose
	is_number(c.period.start_ns)
	c.period.start_ns > now
	r := {"code": "consent.not_yet_valid", "message": concat("", ["consent ", name(c), " has not begun"]), "rule": rule}
}

problems contains r if {
	some c in for_purpose
	is_number(c.period.end_ns)
	c.period.end_ns != 0
	now >= c.period.end_ns
	r := {"code": "consent.expired", "message": concat("", ["consent ", name(c), " has ended"]), "rule": rule}
}

problems contains r if {
	some c in for_purpose
	# Bound first: `not f(x)` with x undefined is true on some engines and false on others.
	listed := object.get(c, "actors", null)
	not actor_listed(listed)
	r := {
		"code": "consent.actor_not_covered",
		"message": concat("", ["consent ", name(c), " covers neither agent ", input.agent.id, " nor the person it acts for"]),
		"rule": rule,
	}
}

problems contains r if {
	some c in for_purpose
	listed := object.get(c, "data_classes", null)
	not class_listed(listed)
	r := {
		"code": "consent.data_class_not_covered",
		"message": concat("", ["consent ", name(c), " does not cover resource type ", input.action.resource_type]),
		"rule": rule,
	}
}
