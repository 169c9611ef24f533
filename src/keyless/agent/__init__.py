"""The keyless agent (``keyless agent``): secrets and credentials for workloads that cannot
speak tokens. It authenticates as an Azure workload does (``settings.AgentEnv``), exchanges the
pod's projected token for keyless access tokens (``auth.KeylessAuth``), and delivers secrets to
files and environments and tokens through the SDKs' local credential protocols."""
