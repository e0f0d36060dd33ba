"""The flusher: turns spool events into Ara API calls and ships them (one-shot, daemon, CLI)."""
