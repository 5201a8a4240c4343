package chartgate.switches_test

import rego.v1

import data.chartgate.fixtures as f

codes_with(switches) := f.codes(f.switches_deny(f.base, f.switch_config(switches)))

test_default_switches_allow if {
	codes_with({}) == set()
}

test_agent_switched_off if {
	reasons := f.switches_deny(f.base, f.switch_config({"agents_off": ["scribe-agent"]}))
	f.codes(reasons) == {"switch.agent_off"}
	f.rules(reasons) == {"chartgate.switches.deny"}
}

test_other_agent_switched_off_does_not_matter if {
	codes_with({"agents_off": ["coder-agent"]}) == set()
}

test_action_switched_off if {
	codes_with({"actions_off": ["fhir.create:Observation"]}) == {"switch.action_off"}
	codes_with({"actions_off": ["fhir.create:*"]}) == {"switch.action_off"}
	codes_with({"actions_off": ["*:Observation"]}) == {"switch.action_off"}
	codes_with({"actions_off": ["fhir.create:MedicationRequest"]}) == set()
}

test_tenant_switched_off if {
	codes_with({"tenants_off": ["st-mary"]}) == {"switch.tenant_off"}
}

test_everything_switched_off if {
	codes_with({"all_off": true}) == {"switch.all_off"}
}

test_partial_switches_object_still_applies if {
	f.codes(f.switches_deny(f.base, {"tenants": {}, "switches": {"agents_off": ["scribe-agent"]}})) == {"switch.agent_off"}
	f.codes(f.switches_deny(f.base, {"tenants": {}, "switches": {}})) == set()
	f.codes(f.switches_deny(f.base, {"tenants": {}})) == set()
}

test_switches_of_the_wrong_type_deny_everything if {
	f.codes(f.switches_deny(f.base, {"tenants": {}, "switches": {"all_off": "yes"}})) == {"switch.malformed"}
	f.codes(f.switches_deny(f.base, {"tenants": {}, "switches": {"agents_off": "scribe-agent"}})) == {"switch.malformed"}
	f.codes(f.switches_deny(f.base, {"tenants": {}, "switches": []})) == {"switch.malformed"}
}
