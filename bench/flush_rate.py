"""Flusher rate vs the server's limit, against a real Ara (gunicorn, and ara-manage runserver).

In one run, alternating configurations round by round:
- baseline: a minimal aiohttp loop POSTing N results (playbook/play/file/task/host pre-created),
  one request in flight, keep-alive and new-connection-per-request (`close`) variants; the faster
  one is the server's limit for a sequential client.
- flusher: `ara-spool flush --run ID` of a spool of H hosts x T tasks (as the callback writes it:
  task_start, H results, task_end per task, host stats, run end), a fresh run each time; wall time
  of the whole command (start-up included). Completeness is checked through the API after each.
- runserver only: the flusher with its `Connection: close` switch turned off (bench/_flusher_keepalive.py),
  and the keep-alive baseline against a runserver whose handler sets TCP_NODELAY (bench/nodelay/),
  which shows the stall is Nagle + delayed ACK.
- fake Ara (bench/fake_ara.py): the flusher's own ceiling when the server costs nothing.
Ratio = flusher results/s (wall) / baseline results/s. Target >= 0.9; requests per result <= 1.2.

    python bench/flush_rate.py            # full: 10 hosts x 50 tasks, 3 rounds, gunicorn + runserver
    python bench/flush_rate.py --quick    # smoke: 10 hosts x 10 tasks, 1 round, gunicorn + runserver
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BIN,
    AraAPI,
    banner,
    build_run,
    flusher_env,
    kill_group,
    load_str,
    machine,
    median,
    port,
    read_state,
    save_results,
    table,
    tempdir,
    wait_http,
)

from tests.ara import AraServer  # noqa: E402

HERE = Path(__file__).resolve().parent


async def baseline(url: str, n: int, close: bool) -> dict[str, Any]:
    """POST n results, one at a time, to pre-created parents: the server's limit for one client."""
    conn = aiohttp.TCPConnector(force_close=close, limit=1)
    async with aiohttp.ClientSession(url + "/api/v1/", connector=conn) as s:
        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with s.post(path, json=body) as r:
                assert r.status == 201, (path, r.status, await r.text())
                return await r.json()

        pb = await post("playbooks", {"path": "/bench/baseline.yml", "ansible_version": "2.19.0",
                                      "status": "running", "labels": [f"run_id:baseline-{uuid.uuid4()}"]})
        play = await post("plays", {"uuid": str(uuid.uuid4()), "playbook": pb["id"], "name": "baseline"})
        f = await post("files", {"playbook": pb["id"], "path": "/bench/baseline.yml", "content": "- hosts: all\n"})
        task = await post("tasks", {"uuid": str(uuid.uuid4()), "name": "t", "action": "debug", "lineno": 1,
                                    "handler": False, "play": play["id"], "file": f["id"], "playbook": pb["id"]})
        host = await post("hosts", {"name": "host000", "playbook": pb["id"]})
        t0 = time.perf_counter()
        for i in range(n):
            await post("results", {
                "playbook": pb["id"], "play": play["id"], "task": task["id"], "host": host["id"],
                "status": "ok", "changed": False, "ignore_errors": False,
                "started": "2025-01-01T00:00:00.000000+00:00", "ended": "2025-01-01T00:00:00.001000+00:00",
                "content": {"msg": f"hello host000 step {i}", "changed": False, "_ansible_verbose_always": True}})
        dt = time.perf_counter() - t0
    return {"seconds": dt, "results": n, "results_per_s": n / dt}


def flush_once(url: str, work: Path, hosts: int, tasks: int, *, variant: str | None = None,
               check: bool = True, timeout: float | None = None) -> dict[str, Any]:
    import subprocess

    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    spool = work / f"spool-{run_id}"
    b = build_run(spool, run_id, hosts, tasks)
    env = flusher_env(url, spool)
    cmd = [str(BIN / "python"), str(HERE / "_flusher_variant.py"), variant] if variant else [str(BIN / "ara-spool")]
    extra = ["--timeout", str(timeout)] if timeout else []
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "flush", "--quiet", "--run", run_id, *extra], env=env, capture_output=True,
                          text=True, timeout=3600)
    dt = time.perf_counter() - t0
    st = read_state(spool, run_id)
    if proc.returncode != 0:
        if not timeout:
            raise RuntimeError(f"flush failed rc={proc.returncode}: {proc.stderr[-2000:]}")
        # A flusher that could not finish in time: say how far it got and why.
        return {"seconds": dt, "events": b.events, "results": b.results, "requests": st["requests"],
                "events_per_s": st["shipped"] / dt, "results_per_s": 0.0, "requests_per_s": st["requests"] / dt,
                "requests_per_result": float("nan"), "run_id": run_id, "complete": False,
                "stuck": f"rc {proc.returncode} after {dt:.0f}s: {st['shipped']}/{b.events} events shipped; "
                         f"last error: {st['last_error']}"}
    out = {"seconds": dt, "events": b.events, "results": b.results, "requests": st["requests"],
           "events_per_s": b.events / dt, "results_per_s": b.results / dt, "requests_per_s": st["requests"] / dt,
           "requests_per_result": st["requests"] / b.results, "run_id": run_id}
    if check:
        api = AraAPI(url)
        pb = api.playbook_for(run_id)
        n = api.get("results", playbook=pb["id"], limit=1)["count"]
        out["complete"] = n == b.results and pb["status"] == "completed"
        if not out["complete"]:
            raise RuntimeError(f"run {run_id} incomplete in Ara: {n}/{b.results} results, status {pb['status']}")
    return out


def start_runserver(base: Path, nodelay: bool) -> AraServer:
    env = {"PYTHONPATH": str(HERE / "nodelay")} if nodelay else None
    server = AraServer(base, kind="runserver", env=env, log_path=base.parent / f"{base.name}.log")
    return server.start()


def bench_server(kind: str, work: Path, rounds: int, hosts: int, tasks: int, n_base: int,
                 stuck_timeout: float = 0) -> dict[str, Any]:
    base = work / f"ara-{kind}"
    if kind == "gunicorn":
        server = AraServer(base, kind="gunicorn", workers=4).start()
    else:
        server = start_runserver(base, nodelay=False)
    nodelay_server = None
    if kind == "runserver":
        # Same database, second server whose handler sets TCP_NODELAY (diagnosis only).
        nodelay_server = start_runserver(base, nodelay=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    loads = []
    try:
        for r in range(rounds):
            loads.append(load_str())
            print(f"  [{kind}] round {r + 1}/{rounds} (load {loads[-1]})", flush=True)
            configs = [
                ("baseline keep-alive", lambda: asyncio.run(baseline(server.url, n_base, close=False))),
                ("flusher", lambda: flush_once(server.url, work, hosts, tasks)),
                ("baseline close", lambda: asyncio.run(baseline(server.url, n_base, close=True))),
            ]
            if kind == "runserver":
                configs += [
                    ("flusher, close switch off (keep-alive)",
                     lambda: flush_once(server.url, work, hosts, tasks, variant="keepalive")),
                    ("baseline keep-alive, server TCP_NODELAY",
                     lambda: asyncio.run(baseline(nodelay_server.url, n_base, close=False))),
                ]
            if r % 2:
                configs.reverse()  # alternate the order round by round
            for name, fn in configs:
                rows.setdefault(name, []).append(fn())
    finally:
        server.stop()
        if nodelay_server:
            nodelay_server.stop()
    return {"rows": rows, "loads": loads}


def bench_fake(work: Path, rounds: int, hosts: int, tasks: int) -> dict[str, Any]:
    import subprocess

    p = port()
    proc = subprocess.Popen([str(BIN / "python"), str(HERE / "fake_ara.py"), "--port", str(p)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{p}"
    try:
        wait_http(url + "/api/")
        out = [flush_once(url, work, hosts, tasks, check=False) for _ in range(rounds)]
    finally:
        kill_group(proc)
    return {"rows": {"flusher vs fake Ara (no server cost)": out}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--tasks", type=int)
    ap.add_argument("--servers", default="gunicorn,runserver")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    tasks = args.tasks or (10 if args.quick else 50)
    hosts = args.hosts
    n_base = hosts * tasks
    info = machine()
    banner("flusher rate vs the server's limit (real Ara 1.8.0, sqlite)", info)
    print(f"spool: {hosts} hosts x {tasks} tasks = {hosts * tasks} results; baseline: {n_base} result POSTs; "
          f"{rounds} round(s), configurations alternated")
    data: dict[str, Any] = {"machine": info, "hosts": hosts, "tasks": tasks, "rounds": rounds, "servers": {}}
    with tempdir("ara-spool-bench-rate-") as work:
        for kind in args.servers.split(","):
            data["servers"][kind] = bench_server(kind, work, rounds, hosts, tasks, n_base,
                                                 stuck_timeout=20 if args.quick else 30)
        data["servers"]["fake"] = bench_fake(work, rounds, hosts, tasks * 4)
    print()
    verdicts = []
    for kind, res in data["servers"].items():
        rows = res["rows"]
        table_rows = []
        for name, runs in rows.items():
            table_rows.append([name, len(runs), median([x["results_per_s"] for x in runs]),
                               median([x["events_per_s"] for x in runs]) if "events_per_s" in runs[0] else "-",
                               median([x.get("requests_per_s", x["results_per_s"]) for x in runs]),
                               median([x.get("requests_per_result", 1.0) for x in runs]),
                               ", ".join(f"{x['results_per_s']:.0f}" for x in runs)])
        print(f"### {kind}" + (" (NOT Ara: bench/fake_ara.py)" if kind == "fake" else ""))
        print(table(["configuration", "runs", "results/s", "events/s", "requests/s", "requests/result",
                     "results/s per run"], table_rows))
        for name, runs in rows.items():
            for x in runs:
                if x.get("stuck"):
                    print(f"NOTE {name}: {x['stuck']}")
        if kind != "fake":
            best_base = max(median([x["results_per_s"] for x in rows[k]])
                            for k in ("baseline keep-alive", "baseline close"))
            key = "flusher" if "flusher" in rows else "flusher + fix (force_close connector)"
            fl = median([x["results_per_s"] for x in rows[key]])
            ratio = fl / best_base
            rpr = median([x["requests_per_result"] for x in rows[key]])
            print(f"[{key}]")
            res["ratio"] = ratio
            res["requests_per_result"] = rpr
            res["flusher_requests_per_s_over_baseline"] = median([x["requests_per_s"] for x in rows[key]]) / best_base
            print(f"flusher / best baseline (results/s): {ratio:.2f} (target >= 0.9: "
                  f"{'MET' if ratio >= 0.9 else 'MISSED'}); HTTP requests/s over baseline "
                  f"{res['flusher_requests_per_s_over_baseline']:.2f}; requests per result {rpr:.3f} "
                  f"(target <= 1.2: {'MET' if rpr <= 1.2 else 'MISSED'})")
            verdicts.append((kind, ratio, rpr))
        print(f"load averages at round starts: {res.get('loads', '-')}")
        print()
    print(f"load average at end: {load_str()}")
    save_results("flush_rate", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
