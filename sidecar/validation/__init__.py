"""Proposal validation: a tool call becomes a parsed, canonicalized, patient-bound FHIR write or an error."""
