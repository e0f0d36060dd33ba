"""`python -m ara_spool.flusher`: the ara-spool command line."""

from ara_spool.flusher.cli import main

raise SystemExit(main())
