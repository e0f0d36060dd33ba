"""A fault-injecting HTTP proxy (aiohttp) in front of a real Ara, driven by the tests.

Rules are tried in order for each request; the first that matches and still has uses left acts:
  respond  answer with `status` (and a body) without contacting Ara
  drop     close the connection before forwarding (the request never reaches Ara)
  lose     forward to Ara (it commits), then close the connection: the response is lost
  delay    forward, then wait `seconds` before answering (past the client's timeout)
  late     wait `seconds`, then forward (Ara commits after the client gave up: a late commit)
  empty    forward to Ara (it commits), then answer its status with an empty body
  hold     wait until `opened` is set, then forward (Ara may be another one by then)
Every request is logged (method, path, what happened).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass
class Rule:
    action: str
    method: str | None = None
    path: str | None = None  # prefix, e.g. "/api/v1/results"
    every: int = 1  # act on every n-th matching request
    times: int | None = None  # act at most this often (None: always)
    status: int = 500
    body: str = "<h1>Server Error (500)</h1>"
    seconds: float = 0.0
    contains: str | None = None  # only requests whose body holds this text
    seen: int = 0
    used: int = 0

    def wants(self, request: web.Request, body: bytes = b"") -> bool:
        if self.method and request.method != self.method:
            return False
        if self.path and not request.path.startswith(self.path):
            return False
        if self.contains is not None and self.contains.encode() not in body:
            return False
        if self.times is not None and self.used >= self.times:
            return False
        self.seen += 1
        if self.seen % self.every:
            return False
        self.used += 1
        return True


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    # ("sent" | "answered", method, path, action), in the order it happened
    timeline: list[tuple[str, str, str, str]] = field(default_factory=list)
    inflight: int = 0  # requests being handled now
    max_inflight: int = 0  # the most handled at once
    late: set[asyncio.Future[None]] = field(default_factory=set)  # late requests not yet forwarded
    late_done: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # releases held requests

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)

        async def on_cleanup(_app: web.Application) -> None:
            if self.session:
                await self.session.close()

        app.on_cleanup.append(on_cleanup)
        return app

    async def _forward(self, request: web.Request) -> tuple[int, bytes, str]:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "application/json")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if any(r.contains for r in self.rules) else b""  # aiohttp keeps it
        rule = next((r for r in self.rules if r.wants(request, body)), None)
        action = rule.action if rule else "forward"
        self.log.append((request.method, request.path, action))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.timeline.append(("sent", request.method, request.path, action))
        try:
            return await self._act(request, rule)
        finally:
            self.inflight -= 1
            self.timeline.append(("answered", request.method, request.path, action))

    async def _act(self, request: web.Request, rule: Rule | None) -> web.StreamResponse:
        if rule is not None and rule.action == "respond":
            return web.Response(status=rule.status, text=rule.body, content_type="text/html")
        if rule is not None and rule.action == "drop":
            request.transport.close()
            raise asyncio.CancelledError
        if rule is not None and rule.action == "late":
            # The request goes on to Ara even when the client has hung up meanwhile.
            body = await request.read()
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("content-type", "authorization", "accept")}
            self.late.add(asyncio.ensure_future(
                self._late(request.method, request.path_qs, body, headers, rule.seconds)))
            await asyncio.sleep(rule.seconds)
            request.transport.close()
            raise asyncio.CancelledError
        if rule is not None and rule.action == "hold":
            await self.opened.wait()
        status, body, ctype = await self._forward(request)
        if rule is not None and rule.action == "empty":
            return web.Response(status=status, body=b"", headers={"Content-Type": ctype})
        if rule is not None and rule.action == "lose":
            request.transport.close()
            raise asyncio.CancelledError
        if rule is not None and rule.action == "delay":
            await asyncio.sleep(rule.seconds)
        return web.Response(status=status, body=body, headers={"Content-Type": ctype})

    async def _late(self, method: str, path_qs: str, body: bytes, headers: dict[str, str], seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        async with self.session.request(method, self.upstream + path_qs, data=body, headers=headers) as resp:
            await resp.read()
        self.late_done += 1

    async def settle(self) -> None:
        """Wait until every late request has reached Ara."""
        await asyncio.gather(*self.late, return_exceptions=True)

    def count(self, method: str, path: str, action: str | None = None) -> int:
        return sum(1 for m, p, a in self.log if m == method and p.startswith(path) and (action is None or a == action))
