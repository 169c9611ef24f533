"""Start-up wiring: settings -> store, keys, TLS -> the two listeners."""
