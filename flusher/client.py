"""The Ara HTTP client: one aiohttp session, timeouts, TLS, auth, and errors sorted by what to do.

TransientError: retry (connection errors, timeouts, 429, 5xx). Its `ambiguous` flag says the
request may have reached Ara, so a create must be looked up before it is sent again.
PermanentError: this request can never succeed (400, 404, 405, 413, ...): quarantine the event.
AuthError: 401/403, or TLS verification failed: stop shipping the run, keep its spool.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import ssl
from typing import Any

import aiohttp
from ara_spool.flusher.config import Config
from ara_spool.flusher.mapping import Lookup
from ara_spool.spool.schema import parse_time


class AraError(Exception):
    """An Ara request that did not succeed."""


class TransientError(AraError):
    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class PermanentError(AraError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(AraError):
    """Ara (or TLS) refused us: nothing will get through until the configuration changes."""


_TAGS = re.compile(r"<[^>]+>")


def _summary(text: str, limit: int = 300) -> str:
    """A one-line summary of an error body (Ara's 400/500 pages may be HTML, not JSON)."""
    text = html.unescape(_TAGS.sub(" ", text))
    return " ".join(text.split())[:limit]


class AraClient:
    """Talks to one Ara API server. Use as `async with AraClient(cfg) as client`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.requests = 0
        self._session: aiohttp.ClientSession | None = None
        # Django's runserver (wsgiref) stalls ~40 ms per request on a kept-alive connection: it
        # writes each response in several small segments, and Nagle holds the next one until the
        # client's delayed ACK (~40 ms). A new connection per request is ~9x faster there, so once
        # its Server header shows up we switch to a session whose connector closes each connection
        # (a "Connection: close" request header is not enough: aiohttp would pool the socket).
        self._close_each = False
        self._closing_session: aiohttp.ClientSession | None = None
        self._session_args: dict[str, Any] = {}
        self._ssl: ssl.SSLContext | bool = True

    async def __aenter__(self) -> AraClient:
        cfg = self.config
        ssl_opt: ssl.SSLContext | bool
        if cfg.insecure:
            ssl_opt = False
        elif cfg.ca_bundle:
            ssl_opt = ssl.create_default_context(cafile=cfg.ca_bundle)
        else:
            ssl_opt = True
        headers = {"Accept": "application/json", "User-Agent": "ara-spool"}
        if cfg.token:
            headers["Authorization"] = f"Bearer {cfg.token}"
        elif cfg.username:
            pair = f"{cfg.username}:{cfg.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._ssl = ssl_opt
        self._session_args = dict(
            base_url=cfg.server + "/",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout, connect=min(cfg.timeout, 10)),
            json_serialize=lambda obj: json.dumps(obj, separators=(",", ":"), default=str),
            raise_for_status=False,
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_opt, limit=max(4, cfg.concurrency * 2)), **self._session_args)
        return self

    def _current(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use AraClient as an async context manager"
        if not self._close_each:
            return self._session
        if self._closing_session is None:
            self._closing_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, force_close=True), **self._session_args)
        return self._closing_session

    async def __aexit__(self, *exc: object) -> None:
        for session in (self._session, self._closing_session):
            if session is not None:
                await session.close()
        self._session = self._closing_session = None

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; the decoded JSON object on 2xx, else one of the errors above."""
        session = self._current()
        self.requests += 1
        where = f"{method} {self.config.display_server}{path}"
        try:
            async with session.request(method, path.lstrip("/"), json=body, params=params) as resp:
                text = await resp.text(errors="replace")
                if resp.headers.get("Server", "").startswith("WSGIServer/"):
                    self._close_each = True
                status = resp.status
        except aiohttp.ClientConnectorCertificateError as exc:
            raise AuthError(
                f"{where}: TLS certificate not trusted ({exc.certificate_error}); set ARA_API_CA_BUNDLE "
                "to your CA file, or ARA_API_INSECURE=true to skip verification"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            # Refused or unresolvable: the request never left, so a retry cannot duplicate.
            raise TransientError(f"{where}: cannot connect ({exc.os_error.strerror or exc})", ambiguous=False) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise TransientError(f"{where}: {kind}", ambiguous=True) from None
        if 200 <= status < 300:
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                raise TransientError(f"{where}: HTTP {status} with a body that is not JSON", ambiguous=True) from None
            return data
        summary = _summary(text)
        if status in (401, 403):
            raise AuthError(self._auth_message(where, status, summary))
        if status == 429 or status >= 500 or status == 408:
            # A 5xx may come after Ara committed: look before sending a create again.
            raise TransientError(f"{where}: HTTP {status} {summary}", ambiguous=True)
        raise PermanentError(f"{where}: HTTP {status} {summary}", status)

    def _auth_message(self, where: str, status: int, summary: str) -> str:
        mode = self.config.auth_mode
        hint = {
            "none": "Ara requires a login: set ARA_API_USERNAME and ARA_API_PASSWORD (or ARA_API_TOKEN for a proxy)",
            "basic": "check ARA_API_USERNAME / ARA_API_PASSWORD",
            "bearer": "the Bearer token was refused (Ara itself only understands Basic auth; a token "
                      "needs a proxy in front of Ara that accepts it)",
        }[mode]
        return f"{where}: HTTP {status} auth refused (auth mode: {mode}): {summary}; {hint}"

    async def find(self, lookup: Lookup) -> dict[str, Any] | None:
        """The object a Lookup describes, or None."""
        data = await self.request("GET", lookup.path, params={k: str(v) for k, v in lookup.params.items()})
        best: dict[str, Any] | None = None
        for obj in data.get("results", []):
            if obj.get("id", 0) <= lookup.min_id:
                continue
            if all(_same(obj.get(k), v, k) for k, v in lookup.equal.items()):
                if best is None or obj["id"] < best["id"]:
                    best = obj
        return best


def _same(a: Any, b: Any, key: str) -> bool:
    if key in ("started", "ended") and isinstance(a, str) and isinstance(b, str):
        try:
            return parse_time(a) == parse_time(b)
        except ValueError:
            return False
    return a == b
