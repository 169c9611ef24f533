"""Kubernetes: the mutating admission webhook's pure injection logic, lookups and manifests.

``inject`` and ``admission`` are pure (a pod, a service account and settings in, a JSON Patch
out); ``lookup`` is the port through which the webhook reads service accounts, ``kubeapi`` its
implementation over the Kubernetes API.
"""
