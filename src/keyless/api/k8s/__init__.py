"""The Kubernetes mutating admission webhook's HTTP edge (``POST /k8s/mutate``)."""

from keyless.api.k8s.mutate import routes

__all__ = ["routes"]
