"""The AD FS authority shape the Azure SDK for Go uses with tenant ``adfs`` (docs/kubernetes.md)."""
