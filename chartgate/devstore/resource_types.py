"""The resource types the store serves and their fhir.resources R4B models (R4 resourcelist.html, http.html#create)."""

from __future__ import annotations

import re
import typing
from functools import cache
from typing import Any, Final

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel

from chartgate.devstore.outcome import fhir_error

# The R4 (4.0.1) resource types that fhir.resources also models in R4B (4.3.0), the models used for
# validation. Written out rather than discovered because discovering them means importing every
# model (about 3 s and 35 MB). Left out: the R4 types R4B removed (EffectEvidenceSynthesis,
# RiskEvidenceSynthesis, MedicinalProduct*, SubstanceNucleicAcid/Polymer/Protein/
# ReferenceInformation/SourceMaterial/Specification), which have no model to validate against, and
# the types new in R4B, which an R4 server does not have. tests/devstore checks the list against
# the installed fhir.resources.
RESOURCE_TYPES: Final[tuple[str, ...]] = tuple(
    """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
    CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse
    ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest
    DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference Encounter Endpoint
    EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable
    ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
    GuidanceResponse HealthcareService ImagingStudy Immunization ImmunizationEvaluation
    ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice Library Linkage List
    Location Measure MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MessageDefinition MessageHeader
    MolecularSequence NamingSystem NutritionOrder Observation ObservationDefinition
    OperationDefinition OperationOutcome Organization OrganizationAffiliation Parameters Patient
    PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole
    Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson RequestGroup
    ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription Substance SupplyDelivery SupplyRequest Task TerminologyCapabilities
    TestReport TestScript ValueSet VerificationResult VisionPrescription
    """.split()  # noqa: SIM905 - a word list reads and diffs better than 128 quoted lines
)
_SUPPORTED: Final[frozenset[str]] = frozenset(RESOURCE_TYPES)

# http://hl7.org/fhir/R4/datatypes.html#id: the syntax of a logical id.
ID_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9\-.]{1,64}")
TYPE_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Z][A-Za-z]{1,63}")


def require_type(resource_type: str) -> str:
    """The type itself when the store serves it; else 404 (http.html#create: type not supported)."""
    if resource_type not in _SUPPORTED:
        # Name only a well-formed type name back; anything else could be arbitrary client text.
        shown = resource_type if TYPE_PATTERN.fullmatch(resource_type) else "(malformed)"
        raise fhir_error(404, "not-supported", f"resource type {shown} is not supported")
    return resource_type


def require_id(resource_id: str) -> str:
    if not ID_PATTERN.fullmatch(resource_id):
        raise fhir_error(
            400, "invalid", "the logical id is not a valid FHIR id ([A-Za-z0-9-.]{1,64})"
        )
    return resource_id


def model_class(resource_type: str) -> type[BaseModel]:
    """The R4B pydantic model of a supported type (imported on first use, then cached)."""
    model: type[BaseModel] = get_fhir_model_class(require_type(resource_type))
    return model


@cache
def element_datatype(resource_type: str, element: str) -> str | None:
    """The FHIR datatype name (e.g. "Reference", "Identifier") of a top-level element, or None.

    Read from the model's field annotation (e.g. `Optional[List[IdentifierType]]`) so that search
    parameters apply exactly where the resource has the element.
    """
    field = model_class(resource_type).model_fields.get(element)
    if field is None:
        return None
    for name in _type_names(field.annotation):
        if name.endswith("Type") and name != "NoneType":
            return name.removesuffix("Type")
    return None


def _type_names(annotation: Any) -> list[str]:
    args = typing.get_args(annotation)
    if not args:
        return [getattr(annotation, "__name__", "")]
    return [name for arg in args for name in _type_names(arg)]
