"""A small local OpenID Connect issuer (OIDC Core 1.0, RFC 7636 PKCE): a development and test target, not a product."""
