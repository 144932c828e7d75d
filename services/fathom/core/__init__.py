"""Cross-cutting pieces: configuration, logging, typed errors."""
