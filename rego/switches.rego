# Kill switches held in data (data.chartgate_config.switches), so operators stop all writes, an
# agent, an action or a tenant without a policy release. An absent switch list is empty.
package chartgate.switches

import rego.v1

rule := "chartgate.switches.deny"

# The usual case, every switch at its default, costs one comparison (every rule evaluated costs
# time on the embedded engine); anything else, including a partial switches object, is looked
# at rule by rule.
deny := set() if data.chartgate_config.switches == data.chartgate_library.switches_default

else := problems

problems contains r if {
	data.chartgate_config.switches.all_off == true
	r := {"code": "switch.all_off", "message": "operators switched off all agent writes", "rule": rule}
}

problems contains r if {
	input.agent.id in data.chartgate_config.switches.agents_off
	r := {"code": "switch.agent_off", "message": concat("", ["operators switched off agent ", input.agent.id]), "rule": rule}
}

# An action is "<tool>:<resource type>"; either half may be "*".
problems contains r if {
	some action in data.chartgate_config.switches.actions_off
	action in [
		concat(":", [input.action.tool, input.action.resource_type]),
		concat(":", [input.action.tool, "*"]),
		concat(":", ["*", input.action.resource_type]),
	]
	r := {"code": "switch.action_off", "message": concat("", ["operators switched off action ", action]), "rule": rule}
}

problems contains r if {
	input.tenant.id in data.chartgate_config.switches.tenants_off
	r := {"code": "switch.tenant_off", "message": concat("", ["operators switched off tenant ", input.tenant.id]), "rule": rule}
}
