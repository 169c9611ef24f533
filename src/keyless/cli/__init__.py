"""The command line: parses and prints; the server and core do the work."""
