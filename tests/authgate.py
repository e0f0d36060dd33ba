"""A reverse proxy in front of a real Ara that checks the credentials, and can be taken down.

What `ARA_API_TOKEN` is for (a proxy that checks a Bearer token in front of Ara), and a check of
HTTP Basic too: a request is forwarded only with an accepted `Authorization` header, else 401.
stop() closes the port (connection refused: "Ara down"); start() opens it again, same port;
`delay` slows every request down (a backlog that lasts long enough to stop in its middle); with
`serial`, one request at a time, as an Ara whose CPU goes to checking passwords (~0.3 s each).
Runs its own event loop in a thread, so that sync tests can drive it.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import Counter

import aiohttp
from aiohttp import web


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bearer(token: str) -> str:
    return f"Bearer {token}"


class AuthGate:
    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.accept: set[str] = set()
        self.seen: Counter[str] = Counter()  # "ok Basic", "refused Bearer", "refused none"...
        self.delay = 0.0  # seconds added to each forwarded request: a slower Ara, for a backlog that lasts
        self.serial = False  # the delay is spent one request at a time (a server busy hashing passwords)
        self._one: asyncio.Lock | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="authgate", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> AuthGate:
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self._call(self._stop())
        if self._session is not None:
            self._call(self._session.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        scheme = auth.split(" ", 1)[0] if auth else "none"
        if auth not in self.accept:
            self.seen[f"refused {scheme}"] += 1
            return web.json_response({"detail": "Invalid credentials."}, status=401)
        self.seen[f"ok {scheme}"] += 1
        if self.delay and self.serial:
            self._one = self._one or asyncio.Lock()
            async with self._one:
                await asyncio.sleep(self.delay)
        elif self.delay:
            await asyncio.sleep(self.delay)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=await request.read(),
                                         headers=headers) as resp:
            return web.Response(status=resp.status, body=await resp.read(),
                                headers={"Content-Type": resp.headers.get("Content-Type", "application/json")})
