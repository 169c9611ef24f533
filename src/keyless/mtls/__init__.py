"""mTLS between workloads with X.509-SVIDs (issue 21): SPIFFE ID authorization over Python
``ssl``, SVID files followed across rotation, and the workloads of ``keyless demo --mtls``."""
