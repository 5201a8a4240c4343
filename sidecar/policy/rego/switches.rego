# Kill switches held in data (data.chartgate_config.switches), so operators stop all writes, an
# agent, an action or a tenant without a policy release. An absent switch is off (an absent list
# empty); a switch of another type denies every write: a typo must not switch a stop off.
package chartgate.switches

import rego.v1

rule := "chartgate.switches.deny"

default switches := {}

switches := data.chartgate_config.switches

all_off := v if {
	is_object(switches)
	v := object.get(switches, "all_off", false)
}

agents_off := v if {
	is_object(switches)
	v := object.get(switches, "agents_off", [])
}

actions_off := v if {
	is_object(switches)
	v := object.get(switches, "actions_off", [])
}

tenants_off := v if {
	is_object(switches)
	v := object.get(switches, "tenants_off", [])
}

# The usual case, every switch at its default, costs one comparison; anything else, a partial
# switches object included, is looked at rule by rule. An `else` chain, not two bodies: an engine
# evaluates every body of a rule (regorus does), and the second builds every reason.
ok if {
	switches == data.chartgate_library.switches_default
} else := true if {
	well_formed
	count(problems) == 0
}

deny := set() if ok

else := problems

well_formed if {
	is_object(switches)
	is_boolean(all_off)
	is_array(agents_off)
	is_array(actions_off)
	is_array(tenants_off)
}

problems contains r if {
	not well_formed
	r := {
		"code": "switch.malformed",
		"message": "the operators' kill switches are not of the documented shape, so every write is denied until they are fixed",
		"rule": rule,
	}
}

problems contains r if {
	all_off == true
	r := {"code": "switch.all_off", "message": "operators switched off all agent writes", "rule": rule}
}

problems contains r if {
	is_array(agents_off)
	input.agent.id in agents_off
	r := {"code": "switch.agent_off", "message": concat("", ["operators switched off agent ", input.agent.id]), "rule": rule}
}

# An action is "<tool>:<resource type>"; either half may be "*".
problems contains r if {
	is_array(actions_off)
	some action in [
		concat(":", [input.action.tool, input.action.resource_type]),
		concat(":", [input.action.tool, "*"]),
		concat(":", ["*", input.action.resource_type]),
	]
	action in actions_off
	r := {"code": "switch.action_off", "message": concat("", ["operators switched off action ", action]), "rule": rule}
}

problems contains r if {
	is_array(tenants_off)
	input.tenant.id in tenants_off
	r := {"code": "switch.tenant_off", "message": concat("", ["operators switched off tenant ", input.tenant.id]), "rule": rule}
}
