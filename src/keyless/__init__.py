"""keyless: self-hosted workload identity federation."""

__version__ = "0.1.0"
