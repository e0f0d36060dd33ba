"""A fast local fake of Ara's REST API, for measuring the flusher itself (memory, CPU ceiling).

Every POST answers 201 with an incrementing id (and the status it was sent, as Ara echoes it),
every PATCH 200 with the id from the path, every GET an empty list. Nothing is stored.
NOT Ara: figures measured against it say nothing about a real server's throughput.

    python bench/fake_ara.py --port 8999
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

ENDPOINTS = ("labels", "playbooks", "plays", "tasks", "hosts", "latesthosts", "results", "files", "records")
EMPTY = json.dumps({"count": 0, "next": None, "previous": None, "results": []})


def make_app(delay_ms: float = 0.0) -> web.Application:
    counter = {"id": 0, "requests": 0}

    async def handle(request: web.Request) -> web.Response:
        counter["requests"] += 1
        if delay_ms:  # a server that takes this long to answer without using this machine's CPU
            await asyncio.sleep(delay_ms / 1000)
        if request.method == "GET":
            if request.path.rstrip("/") == "/api":
                return web.json_response({"kind": "fake-ara", "version": "0", "requests": counter["requests"]})
            if request.path == "/api/v1/":  # the API root the flusher checks on first contact
                return web.json_response({name: f"/api/v1/{name}" for name in ENDPOINTS})
            return web.Response(text=EMPTY, content_type="application/json")
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        if request.method == "POST":
            counter["id"] += 1
            return web.json_response({"id": counter["id"], "status": body.get("status")}, status=201)
        last = request.path.rstrip("/").rsplit("/", 1)[-1]
        return web.json_response({"id": int(last) if last.isdigit() else 0, **body})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="answer each request after this long")
    args = ap.parse_args()
    web.run_app(make_app(args.delay_ms), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
