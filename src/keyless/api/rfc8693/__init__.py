"""RFC 8693 OAuth 2.0 Token Exchange."""
