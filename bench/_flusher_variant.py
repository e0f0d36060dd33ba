"""`ara-spool` with flusher/client.py's runserver switch turned off, for bench/flush_rate.py: it
shows what the switch buys (keep-alive against runserver stalls ~40 ms per request).

    python bench/_flusher_variant.py keepalive flush --run ID   # never switch: keep-alive always

The shipped client (flusher/client.py) moves to a second session whose connector has
force_close=True once it sees runserver's `Server: WSGIServer/` header. (An earlier version only
sent a `Connection: close` request header: aiohttp pooled the socket anyway, runserver closed it,
and every request after failed; tests/test_runserver.py covers that now.)
"""

import sys

from ara_spool.flusher import client

mode = sys.argv.pop(1)

if mode == "keepalive":
    # A data descriptor on the class wins over the instance attribute the client sets.
    client.AraClient._close_each = property(lambda self: False, lambda self, value: None)
else:
    raise SystemExit(f"unknown variant {mode!r}")

from ara_spool.flusher.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
