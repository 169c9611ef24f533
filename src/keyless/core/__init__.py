"""The domain: every rule of keyless lives here. No web framework, no database driver."""
