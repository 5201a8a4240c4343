"""The reviewer console: server-rendered web pages over the Review API, with OpenID Connect sign-in."""
