"""The Ara HTTP client: one aiohttp session, timeouts, TLS, auth, and errors sorted by what to do.

TransientError: retry (connection errors, timeouts, 429, 5xx). Its `ambiguous` flag says the
request may have reached Ara, so a create must be looked up before it is sent again.
PermanentError: a working Ara refused this event's own content (400 with field errors, 413):
quarantine the event and go on.
ServerError: the server is not, or no longer, a working Ara for this run (not an Ara API at that
URL, 404/405, a redirect such as a login page, a 2xx whose body is empty or not Ara's JSON): stop
the run, keep every event in the spool. Nothing about the event is wrong; the destination is.
StaleIdError: Ara does not hold an id the run relies on (a 400 naming a missing related pk, a 404
on one of the run's rows): the shipper stops writing and establishes the run's identity again.
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
from ara_spool.flusher.mapping import wire_json


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


class StaleIdError(AraError):
    """Ara no longer knows an id this run holds (a 400 naming a missing related pk, a 404 on one of
    the run's rows): the database may have been reset or replaced. Nothing about the event is
    wrong: the shipper stops writing and establishes the run's identity again."""


class AuthError(AraError):
    """Ara (or TLS) refused us: nothing will get through until the configuration changes."""


class ServerError(AraError):
    """Not a working Ara at this URL (or not for this run any more). `ambiguous`: a create may
    have been stored all the same (a 2xx whose body we could not read)."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


# What Ara's API root (GET /api/v1/) lists: a server without these is not an Ara API.
ARA_ENDPOINTS = ("playbooks", "plays", "tasks", "hosts", "results", "files")


_TAGS = re.compile(r"<[^>]+>")


def _json_object(text: str) -> bool:
    """Whether a body is a JSON object (Ara's field errors), not an HTML page or a proxy's text."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


# What Ara (Django REST framework) says of a related id it does not hold: `Invalid pk "7" - object
# does not exist.`; and the path of one row (a 404 there, with Ara's JSON, means the row is gone).
_MISSING_PK = re.compile(r"Invalid pk|object does not exist|Invalid hyperlink", re.I)
_ROW_PATH = re.compile(r"/api/v1/[a-z]+/\d+/?$")


def _stale(path: str, status: int, text: str) -> bool:
    """Whether an answer says an id this run holds is gone (not that the event is bad)."""
    if not _json_object(text):
        return False
    if status == 404:
        return bool(_ROW_PATH.search(path))
    return bool(_MISSING_PK.search(text))


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
        self._display = config.display_server  # the URL for messages, credentials redacted (once: it parses)
        self._ssl: ssl.SSLContext | bool = True
        self._inflight: asyncio.Semaphore | None = None  # the bound across runs (max_inflight)
        self._checked_server = False  # the API root answered as Ara's, once per process
        # (run, playbook id) -> `faults` when it was found labelled so: trusted only while no fault
        # has been seen since (a server that went away may come back with another database).
        self.checked_playbooks: dict[tuple[str, int], int] = {}
        self.faults = 0  # answers that were not a success (down, timeout, 5xx, a stale id)

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
        self._inflight = asyncio.Semaphore(max(1, cfg.max_inflight))
        self._session_args = dict(
            base_url=cfg.server + "/",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout, connect=min(cfg.timeout, 10)),
            json_serialize=wire_json,
            raise_for_status=False,
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_opt, limit=max(4, cfg.max_inflight)), **self._session_args)
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
        try:
            return await self._request(method, path, body, params)
        except (TransientError, ServerError, StaleIdError):
            self.faults += 1  # what this client verified before may no longer hold
            raise

    async def _request(self, method: str, path: str, body: dict[str, Any] | None,
                       params: dict[str, Any] | None) -> dict[str, Any]:
        session = self._current()
        self.requests += 1
        where = f"{method} {self._display}{path}"
        assert self._inflight is not None
        try:
            async with self._inflight, session.request(method, path.lstrip("/"), json=body, params=params,
                                       allow_redirects=False) as resp:
                raw = await resp.read()  # bytes: json.loads takes them, without resp.text's charset sniffing
                if resp.headers.get("Server", "").startswith("WSGIServer/"):
                    self._close_each = True
                status = resp.status
                location = resp.headers.get("Location", "")
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
            if status == 204 and method == "DELETE":
                return {}
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = None
            # Ara answers every create and update with the row as JSON: an empty body (a proxy, a
            # worker dying after its commit) or another one says nothing about what Ara stored.
            if not isinstance(data, dict) or (method in ("POST", "PATCH") and "id" not in data):
                what = "an empty body" if not raw else "a body that is not Ara's JSON"
                raise ServerError(f"{where}: HTTP {status} with {what}: is {self._display} Ara's API "
                                  "server, or a proxy in front of it failing?", ambiguous=method != "GET")
            return data
        text = raw.decode("utf-8", errors="replace")
        summary = _summary(text)
        if status in (401, 403):
            raise AuthError(self._auth_message(where, status, summary))
        if status == 429 or status >= 500 or status == 408:
            # A 5xx may come after Ara committed: look before sending a create again.
            raise TransientError(f"{where}: HTTP {status} {summary}", ambiguous=True)
        if 300 <= status < 400:
            raise ServerError(f"{where}: HTTP {status} redirect to {location or '?'} (a login page, or the "
                              "wrong URL?); set ARA_API_SERVER to Ara's API server itself")
        if status in (400, 404) and _stale(path, status, text):
            raise StaleIdError(f"{where}: HTTP {status} {summary}")
        if status == 413 or (status in (400, 422) and _json_object(text)):
            # A working Ara refused what this event holds (field errors, too large): the event's fault.
            raise PermanentError(f"{where}: HTTP {status} {summary}", status)
        # 404/405, or an answer that is not Ara's JSON: the URL is not (or no longer) this run's Ara.
        raise ServerError(f"{where}: HTTP {status} {summary}"[:400])

    async def check_server(self) -> None:
        """Once per process: the URL must answer as Ara's API (its root lists Ara's endpoints).
        Raises ServerError (wrong URL), AuthError or TransientError (down, hanging)."""
        if self._checked_server:
            return
        data = await self.request("GET", "/api/v1/")
        missing = [name for name in ARA_ENDPOINTS if name not in data]
        if missing:
            raise ServerError(f"{self._display}/api/v1/ does not list Ara's endpoints "
                              f"({', '.join(missing)} missing): is this Ara's API server?")
        self._checked_server = True

    def _auth_message(self, where: str, status: int, summary: str) -> str:
        mode = self.config.auth_mode
        hint = {
            "none": "Ara requires a login: set ARA_API_USERNAME and ARA_API_PASSWORD (or ARA_API_TOKEN for a proxy)",
            "basic": "check ARA_API_USERNAME / ARA_API_PASSWORD",
            "bearer": "the Bearer token was refused (Ara itself only understands Basic auth; a token "
                      "needs a proxy in front of Ara that accepts it)",
        }[mode]
        return f"{where}: HTTP {status} auth refused (auth mode: {mode}): {summary}; {hint}"
