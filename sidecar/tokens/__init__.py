"""Token minting: one short-lived RFC 9068 access token per permitted write."""
