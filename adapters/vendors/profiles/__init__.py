"""One module per vendor, each defining PROFILE (a VendorProfile); found by adapters/vendors/registry.py."""
