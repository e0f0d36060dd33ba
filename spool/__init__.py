"""The run-scoped spool: append-only JSON-lines files, their reader, state and locks."""
