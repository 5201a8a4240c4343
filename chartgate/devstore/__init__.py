"""A small local FHIR R4 server (http://hl7.org/fhir/R4/http.html): a development and test target, not a product."""
