"""SPIFFE: the trust domain's bundle, federated bundles, and X.509/JWT SVIDs (docs/spiffe.md)."""
