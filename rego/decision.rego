# The one decision document the sidecar queries: data.chartgate.decision.decision (entrypoint
# chartgate/decision/decision). Any deny reason from any module blocks the write.
package chartgate.decision

import rego.v1

import data.chartgate.consent
import data.chartgate.fields
import data.chartgate.scopes
import data.chartgate.switches
import data.chartgate.tiers

lib := data.chartgate_library

denials := (((switches.deny | consent.deny) | scopes.deny) | fields.deny) | tiers.deny

tenant := data.chartgate_config.tenants[input.tenant.id]

# Obligations come from a table per tier (data.chartgate_library.obligations) and approver roles
# per resource type. Tenants may shorten (never lengthen) a token's lifetime or an approval's
# validity and name their own approver roles per resource type.
library_obligations := lib.obligations.autonomous if tiers.tier == "autonomous"

else := object.union(lib.obligations[tiers.tier], {"approver_roles": object.get(lib.approver_roles, input.action.resource_type, lib.default_approver_roles)})

tenant_adjusts if tenant.token_ttl_seconds

tenant_adjusts if tenant.approval_expiry_seconds

tenant_adjusts if tenant.approver_roles[input.action.resource_type]

obligations := library_obligations if not tenant_adjusts

obligations := object.union(library_obligations, {
	"token_ttl_seconds": shorter(library_obligations.token_ttl_seconds, object.get(tenant, "token_ttl_seconds", null)),
	"approval_expiry_seconds": shorter(library_obligations.approval_expiry_seconds, object.get(tenant, "approval_expiry_seconds", null)),
	"approver_roles": tenant_roles,
}) if tenant_adjusts

# A tenant's value when it is a whole number of seconds (at least 1) below the library's.
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
} else := library_obligations.approver_roles

# sort() of a set returns a set in rego-cpp 1.5.2 (an array in OPA); iterating it gives an array
# in sorted order on both.
sorted_array(s) := [x | some x in sort(s)]

allowed_decision := {
	"allow": true,
	"tier": tiers.tier,
	"reasons": sorted_array(tiers.explain),
	"obligations": obligations,
}

blocked_decision := {
	"allow": false,
	"tier": "blocked",
	"reasons": sorted_array(denials | malformed),
	"obligations": blocked_obligations,
}

# Nothing denied, yet no tier came out (e.g. a whitelist entry naming an unknown tier): block.
default decision := {
	"allow": false,
	"tier": "blocked",
	"reasons": [{
		"code": "policy.incomplete",
		"message": "the policy produced no tier for this write; denying",
		"rule": "chartgate.decision.decision",
	}],
	"obligations": {"token_ttl_seconds": 0, "approvals_required": 0, "approver_roles": [], "approval_expiry_seconds": 0},
}

# Each module's deny set is checked on its own: cheaper on the embedded engine than forming the
# union first, which only the blocked decision needs.
nothing_denied if {
	count(switches.deny) == 0
	count(consent.deny) == 0
	count(scopes.deny) == 0
	count(fields.deny) == 0
	count(tiers.deny) == 0
}

decision := allowed_decision if nothing_denied

decision := blocked_decision if not nothing_denied

blocked_obligations := {"token_ttl_seconds": 0, "approvals_required": 0, "approver_roles": [], "approval_expiry_seconds": 0}

# Deny reasons build their messages from these input members; without them a reason could go
# undefined and vanish (the fallbacks still block), so a malformed input gets a reason of its
# own. Evaluated on the deny path only: every expression costs time on the embedded engine.
well_formed if {
	is_string(input.action.operation)
	is_string(input.action.resource_type)
	is_string(input.action.tool)
	is_array(input.action.fields)
	is_array(input.agent.scopes)
	is_string(input.agent.id)
	is_string(input.tenant.id)
	is_string(input.patient.id)
}

malformed contains r if {
	not well_formed
	r := {
		"code": "input.malformed",
		"message": "the policy input lacks one of action.operation, action.resource_type, action.tool, action.fields, agent.id, agent.scopes, tenant.id, patient.id (docs/policy.md)",
		"rule": "chartgate.decision.well_formed",
	}
}
