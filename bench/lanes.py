"""Results/s with a fixed delay added to every request (a WAN round trip), by host count (issue 13).

A delay proxy (aiohttp, its own process) in front of a real Ara (gunicorn, 4 sync workers, sqlite)
adds D ms to each request. First straight to Ara (the direct rate), then for each delay, and each run
shape (1 x 200, 10 x 20, 50 x 4, 200 x 1 hosts x tasks: ~200 results), alternated in one run:
  - `ara-spool flush --window 1`   (one request at a time: the shipping before lanes)
  - `ara-spool flush --window 16`  (the default: one lane per host, 16 in flight)
  - a raw loop POSTing the same number of results to pre-created parents, 16 at a time (the
    server's ceiling through the same proxy: one request per result, no task or host rows)
Each flush is followed by the same command on the shipped run: its wall and CPU are a flush's fixed
cost (interpreter, imports, first contact), which gives the shipping rate without the process start
and the flusher's marginal CPU per HTTP request (getrusage of the child). "window / raw (requests)"
weighs each side by its requests per result (the flusher also creates task and host rows, and
sends each host's counters). --keepalive runs Ara's gunicorn with gthread workers, which keep
connections open: the CPU per request without a new TCP connection for each.
With --auth: a 10 x 10 run, window 1 vs 16, against a login-protected Ara (Basic auth: Django
checks the password, PBKDF2, on every request) and against Ara with ARA_EXTERNAL_AUTH (the user
comes from REMOTE_USER, which gunicorn sets from the Basic header: the web server in front is
trusted to have checked it, as the README advises), next to an open Ara.

    .venv/bin/python bench/lanes.py [--delays 0,10,20,50] [--shapes 1x200,10x20,50x4,200x1] [--rounds N] [--quick]
    .venv/bin/python bench/lanes.py --delays 50 --shapes 10x40,50x8 --rounds 3   # the +50 ms target
    .venv/bin/python bench/lanes.py --keepalive --delays 0 --shapes 10x20
    .venv/bin/python bench/lanes.py --auth
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BIN,
    ara_server,
    banner,
    build_run,
    flusher_env,
    kill_group,
    load_str,
    machine,
    median,
    pin_apart,
    port,
    read_state,
    save_results,
    table,
    tempdir,
    wait_http,
)

PROXY = r'''
import asyncio, sys
import aiohttp
from aiohttp import web
upstream, delay, listen = sys.argv[1], float(sys.argv[2]) / 1000, int(sys.argv[3])
async def main():
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    async def handle(request):
        body = await request.read()
        await asyncio.sleep(delay)
        async with session.request(request.method, upstream + request.path_qs, data=body,
                                   headers={k: v for k, v in request.headers.items() if k.lower() != "host"}) as r:
            data = await r.read()
            return web.Response(status=r.status, body=data, content_type=r.content_type)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", listen).start()
    await asyncio.Event().wait()
asyncio.run(main())
'''


def start_proxy(upstream: str, delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    p = port()
    proc = subprocess.Popen([sys.executable, "-c", PROXY, upstream, str(delay_ms), str(p)], start_new_session=True,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{p}"
    wait_http(url + "/api/v1/")
    return proc, url


async def raw_loop(url: str, hosts: int, tasks: int, inflight: int) -> float:
    """results/s of a bare concurrent POST loop to pre-created parents (no lookups, no checkpoint)."""
    async with aiohttp.ClientSession(url + "/api/v1/", connector=aiohttp.TCPConnector(limit=inflight)) as s:
        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with s.post(path, json=body) as r:
                assert r.status == 201, (path, r.status, await r.text())
                return await r.json()

        pb = await post("playbooks", {"path": "/bench/raw.yml", "ansible_version": "2.19.0", "status": "running",
                                      "labels": [f"run_id:raw-{uuid.uuid4()}"]})
        play = await post("plays", {"uuid": str(uuid.uuid4()), "playbook": pb["id"], "name": "raw"})
        f = await post("files", {"playbook": pb["id"], "path": "/bench/raw.yml", "content": "- hosts: all\n"})
        task = await post("tasks", {"uuid": str(uuid.uuid4()), "name": "t", "action": "debug", "lineno": 1,
                                    "handler": False, "play": play["id"], "file": f["id"], "playbook": pb["id"]})
        host_ids = [(await post("hosts", {"name": f"host{h:03d}", "playbook": pb["id"]}))["id"] for h in range(hosts)]
        sem = asyncio.Semaphore(inflight)

        async def one(i: int) -> None:
            async with sem:
                await post("results", {
                    "playbook": pb["id"], "play": play["id"], "task": task["id"], "host": host_ids[i % hosts],
                    "status": "ok", "changed": False, "ignore_errors": False,
                    "started": "2025-01-01T00:00:00.000000+00:00", "ended": "2025-01-01T00:00:00.001000+00:00",
                    "content": {"msg": f"hello {i}", "changed": False}})

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(hosts * tasks)))
        return hosts * tasks / (time.perf_counter() - t0)


def flush(url: str, work: Path, hosts: int, tasks: int, window: int, **extra: str) -> dict[str, float]:
    """One `ara-spool flush --window N` of a fresh hosts x tasks run: results/s (wall, process start
    included), wall, CPU seconds of the flusher process (getrusage) and HTTP requests it made. Then
    the same command again on the shipped run: the fixed cost of a flush (interpreter, imports, the
    API root and playbook checks), to give the shipping rate and the CPU per request without it."""
    spool = work / f"spool-{uuid.uuid4().hex[:8]}"
    run_id = f"lanes-{uuid.uuid4().hex[:8]}"
    build_run(spool, run_id, hosts, tasks)
    env = flusher_env(url, spool, **extra)
    cmd = [str(BIN / "ara-spool"), "flush", "--quiet", "--window", str(window), "--run", run_id]
    out: dict[str, float] = {}
    for phase in ("ship", "noop"):
        requests_before = read_state(spool, run_id)["requests"] if phase == "noop" else 0
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"flush failed: {proc.stderr}")
        out[f"{phase}_wall"] = wall
        out[f"{phase}_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out[f"{phase}_requests"] = read_state(spool, run_id)["requests"] - requests_before
    results = hosts * tasks
    out["rate"] = results / out["ship_wall"]
    out["rate_shipping"] = results / max(1e-6, out["ship_wall"] - out["noop_wall"])
    out["requests_per_result"] = out["ship_requests"] / results
    out["cpu_ms_per_request"] = 1000 * out["ship_cpu"] / out["ship_requests"]
    out["cpu_ms_per_request_marginal"] = 1000 * (out["ship_cpu"] - out["noop_cpu"]) / max(
        1, out["ship_requests"] - out["noop_requests"])
    return out


def bench_auth(window: int) -> None:
    creds = {"ARA_API_USERNAME": "bench", "ARA_API_PASSWORD": "bench-password"}
    rows = []
    with tempdir("ara-spool-auth-") as work:
        for name, env in (("open", {}), ("Basic (PBKDF2)", {"ARA_WRITE_LOGIN_REQUIRED": "true"}),
                          ("EXTERNAL_AUTH", {"ARA_WRITE_LOGIN_REQUIRED": "true", "ARA_EXTERNAL_AUTH": "true"})):
            with ara_server(work / name.split()[0], workers=4, env=env,
                            wsgi="remote_user_wsgi:application" if "ARA_EXTERNAL_AUTH" in env else None) as ara:
                if env:
                    subprocess.run([str(BIN / "ara-manage"), "createsuperuser", "--noinput", "--username", "bench",
                                    "--email", "bench@example.com"],
                                   env=dict(ara.env, DJANGO_SUPERUSER_PASSWORD="bench-password"), check=True,
                                   capture_output=True)
                serial = flush(ara.url, work, 10, 10, 1, **(creds if env else {}))["rate"]
                lanes = flush(ara.url, work, 10, 10, window, **(creds if env else {}))["rate"]
                rows.append([name, f"{serial:.1f}", f"{lanes:.1f}", f"{lanes / serial:.2f}x"])
                print(" | ".join(rows[-1]), flush=True)
    print(table(["Ara", "window 1 res/s", f"window {window} res/s", "gain"], rows))
    save_results("lanes-auth", {"rows": rows})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delays", default="0,10,20,50")
    ap.add_argument("--shapes", default="1x200,10x20,50x4,200x1")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--pin", action="store_true",
                    help="Ara on one core, the flushers (and the proxy, the raw loop) on the other: the flusher's "
                         "CPU per request without Ara's workers competing for its core")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole set, alternated; medians reported")
    ap.add_argument("--quick", action="store_true", help="delays 0,50 and shapes 1x50,10x5,50x1")
    ap.add_argument("--auth", action="store_true", help="login-protected Ara: Basic vs EXTERNAL_AUTH vs open")
    ap.add_argument("--keepalive", action="store_true",
                    help="Ara's gunicorn with gthread workers, which keep connections open (sync workers close "
                         "each one): the flusher's CPU per request without a TCP connection per request")
    args = ap.parse_args()
    if args.auth:
        bench_auth(args.window)
        return
    if args.quick:
        args.delays, args.shapes = "0,50", "1x50,10x5,50x1"
    delays = [float(d) for d in args.delays.split(",")]
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    env = {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 4 --keep-alive 5"} if args.keepalive else None
    banner("lanes: results/s by added delay and hosts", machine())
    print(f"Ara: gunicorn, 4 {'gthread (keep-alive)' if args.keepalive else 'sync'} workers, sqlite; "
          f"window {args.window}; rates include the flusher's process start unless said otherwise")
    runs: dict[tuple[float | None, int, int], list[dict[str, Any]]] = {}
    with tempdir("ara-spool-lanes-") as work, ara_server(work / "ara", workers=4, env=env) as ara:
        if args.pin:
            assert ara.proc is not None
            server_core, client_core = pin_apart(ara.proc.pid)
            print(f"pinned: Ara on core {server_core}; this bench, the flushers and the proxy on core {client_core}")
        flush(ara.url, work, 5, 5, args.window)  # warm up: Ara's workers, the page cache
        asyncio.run(raw_loop(ara.url, 5, 10, args.window))
        for r in range(args.rounds):
            for delay in [None, *delays]:  # None: straight to Ara, no proxy (the direct rate)
                proxy, url = start_proxy(ara.url, delay) if delay is not None else (None, ara.url)
                try:
                    for hosts, tasks in shapes:
                        serial = flush(url, work, hosts, tasks, 1)
                        lanes = flush(url, work, hosts, tasks, args.window)
                        raw = asyncio.run(raw_loop(url, hosts, tasks, args.window))
                        runs.setdefault((delay, hosts, tasks), []).append(
                            {"window_1": serial, "window": lanes, "raw": raw})
                        print(f"round {r + 1} {'direct' if delay is None else f'+{delay:.0f} ms'} {hosts}x{tasks}: "
                              f"window 1 {serial['rate']:.1f}, window {args.window} {lanes['rate']:.1f}, "
                              f"raw {raw:.1f} results/s (load {load_str()})", flush=True)
                finally:
                    if proxy is not None:
                        kill_group(proxy)
    rows = []
    for (delay, hosts, tasks), rs in runs.items():
        def med(key: str, field: str | None = None, rs: list[dict[str, Any]] = rs) -> float:
            return median([x[key][field] if field else x[key] for x in rs])

        lanes_rate, shipping, raw = med("window", "rate"), med("window", "rate_shipping"), med("raw")
        direct = median([x["window"]["rate"] for x in runs[(None, hosts, tasks)]])
        rows.append([
            "direct" if delay is None else f"+{delay:.0f} ms", f"{hosts}x{tasks}", f"{med('window_1', 'rate'):.1f}",
            f"{lanes_rate:.1f}", f"{shipping:.1f}", f"{raw:.1f}", f"{lanes_rate / direct:.2f}",
            f"{shipping / raw:.2f}", f"{shipping * med('window', 'requests_per_result') / raw:.2f}",
            f"{med('window', 'cpu_ms_per_request'):.2f}", f"{med('window', 'cpu_ms_per_request_marginal'):.2f}"])
    print(f"medians of {args.rounds} round(s)")
    print(table(["delay", "hosts x tasks", "window 1 res/s", f"window {args.window} res/s",
                 "same, process start excluded", "raw res/s", "window / direct", "window / raw (results)",
                 "window / raw (requests)", "CPU ms/req", "CPU ms/req marginal"], rows))
    print(f"load average at end: {load_str()}")
    save_results("lanes", {"runs": [{"delay_ms": d, "hosts": h, "tasks": t, "rounds": rs}
                                    for (d, h, t), rs in runs.items()],
                           "keepalive": args.keepalive, "pid": os.getpid()})


if __name__ == "__main__":
    main()
