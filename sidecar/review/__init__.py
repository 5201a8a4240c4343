"""The Review API's side of approvals: who the human reviewer is (OIDC Core 1.0, RFC 7519 bearer tokens)."""
