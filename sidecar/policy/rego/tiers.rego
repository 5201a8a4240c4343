# Risk tiers: which writes are whitelisted for agents (data.chartgate_library.whitelist) and how
# many human approvals each needs, from resource type, operation, category, tenant settings,
# confidence and live/batch mode. The strictest contribution wins, so tenant overrides can only
# make a tier stricter; the one setting that can lower it is the vital-signs threshold below.
package chartgate.tiers

import rego.v1

key := concat(":", [input.action.operation, input.action.resource_type])

entry := data.chartgate_library.whitelist[key]

tenant := data.chartgate_config.tenants[input.tenant.id]

base_level := data.chartgate_library.levels[entry.tier]

# A tenant may let vital-sign Observation creates at or above a confidence threshold through
# without approval, in live mode only (tenants.<id>.autonomous_vital_signs_min_confidence).
vital_signs_autonomous if {
	key == "create:Observation"
	input.mode == "live"
	threshold := tenant.autonomous_vital_signs_min_confidence
	is_number(threshold)
	input.confidence >= threshold
	count(input.action.summary.category) > 0
	every coding in input.action.summary.category {
		coding.system == data.chartgate_library.vital_signs.system
		coding.code == data.chartgate_library.vital_signs.code
	}
}

# Category-specific tiers of the whitelist entry, e.g. a problem-list Condition.
category_tiers contains t if {
	tiers := entry.category_tiers
	some coding in input.action.summary.category
	t := tiers[concat("|", [coding.system, coding.code])]
}

override_level := data.chartgate_library.levels[tenant.tier_overrides[key]]

levels contains l if {
	not vital_signs_autonomous
	l := base_level
}

levels contains 0 if vital_signs_autonomous

levels contains l if {
	some t in category_tiers
	l := data.chartgate_library.levels[t.tier]
}

levels contains l if {
	l := override_level
}

# Batch mode never makes a write autonomous.
levels contains 1 if batch_raises

# The usual case costs a few lookups (every rule evaluated costs time on the embedded engine):
# nothing but the whitelist entry contributes. First the cheapest way to know it: no category
# tiers, no settings for the tenant at all, live mode.
entry_alone if {
	not entry.category_tiers
	not tenant
	input.mode == "live"
} else := true if {
	not entry.category_tiers
	not tenant.tier_overrides[key]
	not vital_signs_autonomous
	not batch_raises
}

batch_raises if {
	input.mode != "live"
	base_level == 0
}

final := base_level if entry_alone

else := max(levels) if entry

tier := data.chartgate_library.order[final]

explain := {entry.reason} if entry_alone

else := contributions

# Why the tier is what it is: the contributions that set the final level.
contributions contains r if {
	r := entry.reason
	not vital_signs_autonomous
	base_level == final
}

contributions contains r if {
	r := data.chartgate_library.vital_signs.reason
	vital_signs_autonomous
	final == 0
}

contributions contains r if {
	some t in category_tiers
	r := t.reason
	data.chartgate_library.levels[t.tier] == final
}

contributions contains r if {
	override_level == final
	override_level > base_level
	r := {
		"code": "tier.tenant_override",
		"message": concat("", ["tenant ", input.tenant.id, " requires ", tier, " for ", key]),
		"rule": "chartgate.tiers.tenant_override",
	}
}

contributions contains r if {
	r := data.chartgate_library.batch_mode_reason
	batch_raises
	final == 1
}

invalid_override if {
	entry
	t := tenant.tier_overrides[key]
	not data.chartgate_library.levels[t]
}

# Whitelisted, not blocked by a tenant, no broken override.
ok if {
	final < 3
	not invalid_override
}

# Reasons are only worked out off the usual path (every rule evaluated costs time on the
# embedded engine).
deny := set() if ok

else := problems if count(problems) > 0

else := {{"code": "tier.not_whitelisted", "message": "no tier could be worked out for this write", "rule": "chartgate.tiers.deny"}}

problems contains r if {
	not entry
	r := {
		"code": "tier.not_whitelisted",
		"message": concat("", [input.action.operation, " of ", input.action.resource_type, " is not whitelisted for agents"]),
		"rule": "chartgate.tiers.deny",
	}
}

problems contains r if {
	final == 3
	r := {
		"code": "tier.tenant_blocked",
		"message": concat("", ["tenant ", input.tenant.id, " blocks ", key]),
		"rule": "chartgate.tiers.deny",
	}
}

problems contains r if {
	invalid_override
	r := {
		"code": "tier.invalid_override",
		"message": concat("", ["tenant ", input.tenant.id, " has a tier override for ", key, " that names no tier; denying"]),
		"rule": "chartgate.tiers.deny",
	}
}
