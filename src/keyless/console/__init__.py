"""The keyless console: a loopback-only web UI over the admin socket (docs/console.md)."""
