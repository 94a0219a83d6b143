"""Authentication: local accounts (argon2 + JWT); OIDC providers plug in beside it."""
