"""The Google dialect: STS (workload identity federation), IAM Credentials (service-account
impersonation) and Secret Manager v1 REST, under ``PUBLIC_URL/gcp`` (``core/gcpnames.py``)."""
