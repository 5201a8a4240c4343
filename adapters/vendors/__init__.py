"""Vendor profiles: what differs between EHRs, one module per vendor (docs/adapters.md).

Kept free of imports on purpose: the local FHIR store reads the profiles too, and must not pull
in the adapter's gRPC stubs to do so. Import from the submodules: `profile` (the interface),
`registry` (`get_profile`), `gate` (refusals before the wire), `transport` (the httpx seam).
"""
