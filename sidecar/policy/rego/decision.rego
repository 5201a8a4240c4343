# The decision document (docs/policy.md): allow, tier, reasons and obligations, combined from one
# module per concern. A write is allowed only when the input is well formed and no module denies.
package chartgate.decision

import rego.v1

# The modules are referenced as data.chartgate.<module>.<rule>, never through an imported alias:
# regorus evaluates the whole imported package to resolve an alias (measured: ~60 µs per module,
# reasons included), while a full reference evaluates only the rule named.

# The type of every input member the modules read, in one expression: a member that is missing
# makes the array undefined, a member of another type makes it differ. Checked before anything
# else, so no module ever compares, iterates or calls a builtin on a value of the wrong type,
# and every engine decides the same on any input (docs/policy.md, "Writing policy").
input_types := [
	type_name(input.time.now_ns),
	type_name(input.agent.id),
	type_name(input.agent.scopes),
	type_name(input.agent.grants),
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

well_formed if input_types == data.chartgate_library.input_types

nothing_denied if {
	data.chartgate.switches.ok
	data.chartgate.consent.ok
	data.chartgate.scopes.ok
	data.chartgate.fields.ok
	data.chartgate.tiers.ok
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
	"tier": data.chartgate.tiers.tier,
	"reasons": sort(data.chartgate.tiers.explain),
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

denials := (((data.chartgate.switches.deny | data.chartgate.consent.deny) | data.chartgate.scopes.deny) | data.chartgate.fields.deny) | data.chartgate.tiers.deny

malformed_decision := {
	"allow": false,
	"tier": "blocked",
	"reasons": [{
		"code": "input.malformed",
		"message": concat("", [
			"the policy input does not have the documented shape (docs/policy.md, \"Input\"): expected ",
			concat(", ", data.chartgate_library.input_members),
		]),
		"rule": "chartgate.decision.well_formed",
	}],
	"obligations": blocked_obligations,
}

blocked_obligations := data.chartgate_library.obligations.blocked

# Obligations: the tier's (data.json), with approver roles per resource type, then any tenant
# settings (which may only shorten lifetimes and name other approver roles).
tenant := data.chartgate_config.tenants[input.tenant.id]

library_obligations := data.chartgate_library.obligations.autonomous if {
	data.chartgate.tiers.tier == "autonomous"
} else := o if {
	held := data.chartgate_library.obligations[data.chartgate.tiers.tier]
	o := object.union(held, {"approver_roles": object.get(data.chartgate_library.approver_roles, input.action.resource_type, data.chartgate_library.default_approver_roles)})
}

# else chains, not several bodies: an engine may evaluate every body of a rule.
tenant_adjusts if {
	tenant.token_ttl_seconds
} else := true if {
	tenant.approval_expiry_seconds
} else := true if {
	tenant.approver_roles[input.action.resource_type]
}

obligations := o if {
	not tenant
	o := library_obligations
} else := o if {
	not tenant_adjusts
	o := library_obligations
} else := object.union(library_obligations, {
	"token_ttl_seconds": shorter(library_obligations.token_ttl_seconds, object.get(tenant, "token_ttl_seconds", null)),
	"approval_expiry_seconds": shorter(library_obligations.approval_expiry_seconds, object.get(tenant, "approval_expiry_seconds", null)),
	"approver_roles": tenant_roles,
})

shorter(library, setting) := setting if {
	is_number(setting)
	setting == round(setting)
	setting >= 1
	setting < library
} else := library

tenant_roles := library_obligations.approver_roles if data.chartgate.tiers.tier == "autonomous"

else := roles if {
	roles := tenant.approver_roles[input.action.resource_type]
	is_array(roles)
	count(roles) > 0
	every role in roles {
		is_string(role)
	}
} else := library_obligations.approver_roles
