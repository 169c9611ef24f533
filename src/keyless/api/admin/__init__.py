"""The admin API, served only on the Unix socket (file permissions are the access control)."""
