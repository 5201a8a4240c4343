# Patient consent: a write needs an active, current consent record of the patient that covers
# the request's purpose of use, its actor and its data class. AI model training (MLTRAINING) is a
# purpose of its own, never covered by a consent for another purpose.
package chartgate.consent

import rego.v1

rule := "chartgate.consent.deny"

# Policies compare integer ns from the input and never call time.now_ns(), so a decision can be
# replayed from its input. A period bound of 0 is open; the end bound is exclusive.
covers(c) if {
	c.status == "active"
	c.period.start_ns <= input.time.now_ns
	not ended(c)
	actor_listed(c)
	class_listed(c)
}

ended(c) if {
	c.period.end_ns != 0
	input.time.now_ns >= c.period.end_ns
}

covered if {
	some c in input.consents
	c.patient == input.patient.id
	input.purpose_of_use in c.purposes
	covers(c)
}

# The patient's records for this purpose (records for other patients are never considered).
for_purpose contains c if {
	some c in input.consents
	c.patient == input.patient.id
	input.purpose_of_use in c.purposes
}

purpose_given if {
	is_string(input.purpose_of_use)
	input.purpose_of_use != ""
}

problems contains r if {
	not purpose_given
	r := {"code": "consent.purpose_missing", "message": "the request names no purpose of use", "rule": rule}
}

problems contains r if {
	not is_number(input.time.now_ns)
	r := {
		"code": "consent.time_missing",
		"message": "input.time.now_ns is missing, so consent periods cannot be checked",
		"rule": rule,
	}
}

problems contains r if {
	count(for_purpose) == 0
	purpose_given
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
		"code": object.get(data.chartgate_library.consent_status_codes, c.status, "consent.not_active"),
		"message": concat("", ["consent ", c.id, " has status ", c.status, ", not active"]),
		"rule": rule,
	}
}

problems contains r if {
	some c in for_purpose
	c.period.start_ns > input.time.now_ns
	r := {"code": "consent.not_yet_valid", "message": concat("", ["consent ", c.id, " has not begun"]), "rule": rule}
}

problems contains r if {
	some c in for_purpose
	ended(c)
	r := {"code": "consent.expired", "message": concat("", ["consent ", c.id, " has ended"]), "rule": rule}
}

problems contains r if {
	some c in for_purpose
	not actor_listed(c)
	r := {
		"code": "consent.actor_not_covered",
		"message": concat("", ["consent ", c.id, " covers neither agent ", input.agent.id, " nor the person it acts for"]),
		"rule": rule,
	}
}

problems contains r if {
	some c in for_purpose
	not class_listed(c)
	r := {
		"code": "consent.data_class_not_covered",
		"message": concat("", ["consent ", c.id, " does not cover resource type ", input.action.resource_type]),
		"rule": rule,
	}
}

actor_listed(c) if {
	some actor in c.actors
	actor in ["*", input.agent.id, input.on_behalf_of]
}

class_listed(c) if {
	some class in c.data_classes
	class in ["*", input.action.resource_type]
}

# The reasons are only worked out when no record covers the request: on the embedded engine
# every rule evaluated costs time, and the allowed path should pay for `covered` alone.
deny := set() if covered

else := problems if count(problems) > 0

# Not covered, yet no specific reason could be built (e.g. a record shaped unlike
# docs/policy.md): deny all the same, never fall silent.
else := {not_covering}

not_covering := {"code": "consent.not_covering", "message": "no consent record of the patient covers this request", "rule": rule}
