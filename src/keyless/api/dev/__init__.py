"""The development cluster issuer's public routes (``--dev`` only)."""
