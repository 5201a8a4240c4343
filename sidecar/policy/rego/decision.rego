# The decision document (docs/policy.md): allow, tier, reasons and obligations, combined from one
# module per concern. A write is allowed only when the input is well formed and no module denies.
package chartgate.decision

import rego.v1

import data.chartgate.consent
import data.chartgate.fields
import data.chartgate.scopes
import data.chartgate.switches
import data.chartgate.tiers

lib := data.chartgate_library

# The type of every input member the modules read, in one expression: a member that is missing
# makes the array undefined, a member of another type makes it differ. Checked before anything
# else, so no module ever compares, iterates or calls a builtin on a value of the wrong type,
# and every engine decides the same on any input (docs/policy.md, "Writing policy").
input_types := [
	type_name(input.time.now_ns),
	type_name(input.agent.id),
	type_name(input.agent.scopes),
	type_name(input.action.tool),
	type_name(input.action.operation),
	type_name(input.action.resource_type),
	type_name(input.action.fields),
	type_name(input.action.summary.status),
	type_name(input.action.summary.category),
	type_name(input.action.summary.code),
	type_name(input.patient.id),
	type_name(input.purpose_of_use),
	type_name(input.on_behalf_of),
	type_name(input.consents),
	type_name(input.tenant.id),
	type_name(input.confidence),
	type_name(input.mode),
]

well_formed if input_types == lib.input_types

nothing_denied if {
	switches.ok
	consent.ok
	scopes.ok
	fields.ok
	tiers.ok
}

default decision := {
	"allow": false,
	"tier": "blocked",
	"reasons": [{
		"code": "policy.incomplete",
		"message": "the policy produced no decision for this write; denying",
		"rule": "chartgate.decision.decision",
	}],
	"obligations": {"token_ttl_seconds": 0, "approvals_required": 0, "approver_roles": [], "approval_expiry_seconds": 0},
}

decision := malformed_decision if not well_formed

decision := checked_decision if well_formed

# Values are bound in the bodies, never left in a head: when a head value is undefined, OPA
# takes the `else` and regorus does not (found by the parity suite).
checked_decision := d if {
	nothing_denied
	d := allowed_decision
} else := blocked_decision

incomplete := {
	"code": "policy.incomplete",
	"message": "nothing denied this write, yet the policy produced no tier or obligations for it; denying",
	"rule": "chartgate.decision.decision",
}

allowed_decision := {
	"allow": true,
	"tier": tiers.tier,
	"reasons": sort(tiers.explain),
	"obligations": obligations,
}

blocked_decision := {
	"allow": false,
	"tier": "blocked",
	"reasons": blocked_reasons,
	"obligations": blocked_obligations,
}

blocked_reasons := sort(denials) if count(denials) > 0

else := [incomplete]

denials := (((switches.deny | consent.deny) | scopes.deny) | fields.deny) | tiers.deny

malformed_decision := {
	"allow": false,
	"tier": "blocked",
	"reasons": [{
		"code": "input.malformed",
		"message": concat("", [
			"the policy input does not have the documented shape (docs/policy.md, \"Input\"): expected ",
			concat(", ", lib.input_members),
		]),
		"rule": "chartgate.decision.well_formed",
	}],
	"obligations": blocked_obligations,
}

blocked_obligations := lib.obligations.blocked

# Obligations: the tier's, with approver roles per resource type, then any tenant settings
# (which may only shorten lifetimes and name other approver roles).
tenant := data.chartgate_config.tenants[input.tenant.id]

library_obligations := lib.obligations.autonomous if tiers.tier == "autonomous"

else := o if {
	held := lib.obligations[tiers.tier]
	o := object.union(held, {"approver_roles": object.get(lib.approver_roles, input.action.resource_type, lib.default_approver_roles)})
}

tenant_adjusts if tenant.token_ttl_seconds

tenant_adjusts if tenant.approval_expiry_seconds

tenant_adjusts if tenant.approver_roles[input.action.resource_type]

obligations := library_obligations if not tenant_adjusts

obligations := object.union(library_obligations, {
	"token_ttl_seconds": shorter(library_obligations.token_ttl_seconds, object.get(tenant, "token_ttl_seconds", null)),
	"approval_expiry_seconds": shorter(library_obligations.approval_expiry_seconds, object.get(tenant, "approval_expiry_seconds", null)),
	"approver_roles": tenant_roles,
}) if tenant_adjusts

shorter(library, setting) := setting if {
	is_number(setting)
	setting == round(setting)
	setting >= 1
	setting < library
} else := library

tenant_roles := library_obligations.approver_roles if tiers.tier == "autonomous"

else := roles if {
	roles := tenant.approver_roles[input.action.resource_type]
	is_array(roles)
	count(roles) > 0
	every role in roles {
		is_string(role)
	}
} else := library_obligations.approver_roles
