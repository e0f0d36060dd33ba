"""The flusher's CPU per HTTP request, beside a bare aiohttp loop against the same server (issue 13).

Issue 13's target is <= 0.5 ms of the flusher's CPU per request. What one request costs a client
depends on the server as much as on the client, so each server is measured with two clients,
alternated round by round in one run:
  - `ara-spool flush --window 16` (the shipped flusher: lanes, checkpoints, lookups);
  - a bare loop: one aiohttp session POSTing results 16 at a time to pre-created parents
    (lanes.raw_loop: no checkpoint, no lookups, no mapping). No aiohttp client does less per request:
    it is the floor under any flusher written with aiohttp.
Each client runs as its own process, pinned to one core, for a 10 x 40 and a 10 x 200 run; its CPU
per request is the difference of the two runs' CPU (getrusage) over the difference of their
requests, so the interpreter, imports and first contact cancel out. Servers, on the other core:
  - fake Ara answering at once (fake_ara.py, not Ara): the client's cost when it never waits;
  - fake Ara answering after --delay ms without using CPU: the same work, with the client idle
    between answers, as it is against a real server;
  - a real Ara (gunicorn, 4 gthread workers keeping connections open, sqlite).
With --instructions (needs valgrind), the same two clients against the instant fake, counted in
instructions (callgrind's Ir: 10 x 20 vs 10 x 60) instead of CPU time: on a noisy machine, the one
measure that is the same run after run, for comparing two versions of the flusher.
Last, the same pure-Python work (JSON encode and decode of a result body) timed after idle gaps of
0, 1, 5 and 20 ms: what waking up from idle costs on this machine, whatever the client.

    .venv/bin/python bench/cpu.py [--rounds 3] [--delay 15] [--quick]
    .venv/bin/python bench/cpu.py --instructions
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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

# Two run sizes per client (hosts, tasks): their difference cancels the process start.
CPU_SIZES = ((10, 40), (10, 200))
IR_SIZES = ((10, 20), (10, 60))  # valgrind runs ~50x slower
WINDOW = 16
Measure = Callable[[list[str], "dict[str, str] | None"], float]


def child_cpu(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """CPU seconds (user + system) of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def instructions(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Instructions one child process executes (valgrind callgrind's Ir), run to its end."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd], env=env,
                          capture_output=True, text=True, timeout=3600)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"{cmd[:3]} under valgrind failed: {proc.stderr[-2000:]}")
    return float(found.group(1))


def flusher_run(measure: Measure, url: str, work: Path, hosts: int, tasks: int) -> tuple[float, int]:
    """(cost, HTTP requests) of `ara-spool flush` shipping a fresh hosts x tasks run."""
    spool = work / f"spool-{uuid.uuid4().hex[:8]}"
    run_id = f"cpu-{uuid.uuid4().hex[:8]}"
    build_run(spool, run_id, hosts, tasks)
    cost = measure([str(BIN / "python"), "-m", "ara_spool.flusher", "flush", "--quiet", "--timeout", "0",
                    "--window", str(WINDOW), "--run", run_id], flusher_env(url, spool))
    return cost, read_state(spool, run_id)["requests"]


def bare_run(measure: Measure, url: str, work: Path, hosts: int, tasks: int) -> tuple[float, int]:
    """(cost, HTTP requests) of the bare loop POSTing the same results."""
    cost = measure([sys.executable, __file__, "--bare", url, str(hosts), str(tasks)], None)
    return cost, 4 + hosts + hosts * tasks  # playbook, play, file, task, the hosts, the results


CLIENTS = (("ara-spool flush", flusher_run), ("bare loop", bare_run))


def per_request(run: Callable[..., tuple[float, int]], measure: Measure, url: str, work: Path,
                sizes: tuple[tuple[int, int], tuple[int, int]]) -> float:
    """The cost per request of the larger run less the smaller one."""
    (small, small_n), (large, large_n) = (run(measure, url, work, *size) for size in sizes)
    return (large - small) / (large_n - small_n)


def bench_instructions(rounds: int) -> None:
    """k instructions per request, flusher and bare loop, against the instant fake."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    got: dict[str, list[float]] = {}
    proc, url = start_fake(0)
    try:
        with tempdir("ara-spool-cpu-") as work:
            for r in range(rounds):
                for client, run in CLIENTS:
                    k = per_request(run, instructions, url, work, IR_SIZES) / 1000
                    got.setdefault(client, []).append(k)
                    print(f"round {r + 1}: {client} {k:.0f} k instructions/request", flush=True)
    finally:
        kill_group(proc)
    flusher, bare = median(got["ara-spool flush"]), median(got["bare loop"])
    print(table(["client, instant fake Ara", "k instructions per request"],
                [["ara-spool flush", f"{flusher:.0f}"], ["bare aiohttp loop", f"{bare:.0f}"],
                 ["ratio", f"{flusher / bare:.2f}"]]))
    save_results("cpu-instructions", {"rounds": got, "window": WINDOW})


def wake_cost(gaps_ms: tuple[float, ...] = (0, 1, 5, 20), units: int = 200) -> dict[float, float]:
    """us of CPU for the same JSON work done after an idle gap of each length."""
    body = {"playbook": 1, "play": 2, "task": 3, "host": 4, "status": "ok",
            "content": {"msg": "hello " * 20, "changed": False}}
    out = {}
    for gap in gaps_ms:
        cpu = 0.0
        for _ in range(units):
            if gap:
                time.sleep(gap / 1000)
            c0 = time.process_time()
            for _ in range(20):
                json.loads(json.dumps(body))
            cpu += time.process_time() - c0
        out[gap] = 1e6 * cpu / units
    return out


def start_fake(delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    p = port()
    proc = subprocess.Popen([str(BIN / "python"), str(Path(__file__).with_name("fake_ara.py")), "--port", str(p),
                             "--delay-ms", str(delay_ms)], start_new_session=True)
    url = f"http://127.0.0.1:{p}"
    wait_http(url + "/api/v1/")
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay", type=float, default=15.0, help="ms the slow fake Ara takes to answer")
    ap.add_argument("--quick", action="store_true", help="one round, fakes only")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions (valgrind) instead of CPU time: the fake Ara only")
    ap.add_argument("--bare", nargs=3, metavar=("URL", "HOSTS", "TASKS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        from lanes import raw_loop

        url, hosts, tasks = args.bare
        asyncio.run(raw_loop(url, int(hosts), int(tasks), WINDOW))
        return
    if args.instructions:
        bench_instructions(1 if args.quick else args.rounds)
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores: the server on one, the client on the other")
    banner("cpu: the flusher's CPU per request beside a bare aiohttp loop", machine())
    rounds = 1 if args.quick else args.rounds
    servers = ["fake, at once", f"fake, after {args.delay:.0f} ms"] + ([] if args.quick else ["real Ara"])
    got: dict[tuple[str, str], list[float]] = {}
    cores = sorted(os.sched_getaffinity(0))  # before pin_apart moves this process to the last one
    with tempdir("ara-spool-cpu-") as work, contextlib.ExitStack() as stack:
        ara = None
        if not args.quick:
            env = {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 4 --keep-alive 5"}
            ara = stack.enter_context(ara_server(work / "ara", workers=4, env=env))
            assert ara.proc is not None
            pin_apart(ara.proc.pid)  # Ara on the first core, this process and its children on the second
        fakes = [start_fake(0), start_fake(args.delay)]
        for proc, _ in fakes:
            stack.callback(kill_group, proc)
            os.sched_setaffinity(proc.pid, {cores[0]})
        os.sched_setaffinity(0, {cores[1]})
        urls = [url for _, url in fakes] + ([ara.url] if ara is not None else [])
        flusher_run(child_cpu, urls[0], work, 2, 2)  # warm up: the page cache, the fakes
        for r in range(rounds):
            for name, url in zip(servers, urls, strict=True):
                for client, run in CLIENTS:
                    ms = 1000 * per_request(run, child_cpu, url, work, CPU_SIZES)
                    got.setdefault((name, client), []).append(ms)
                    print(f"round {r + 1} {name}: {client} {ms:.2f} ms/request (load {load_str()})", flush=True)
        wake = wake_cost()
    rows = []
    for name in servers:
        flusher, bare = median(got[(name, "ara-spool flush")]), median(got[(name, "bare loop")])
        rows.append([name, f"{flusher:.2f}", f"{bare:.2f}", f"{flusher / bare:.2f}", f"{flusher - bare:+.2f}"])
    print(f"CPU ms per request, medians of {rounds} round(s), window {WINDOW}, client and server on separate cores")
    print(table(["server", "ara-spool flush", "bare aiohttp loop", "ratio", "difference"], rows))
    print(table(["idle gap before the same work", "us CPU", "x no gap"],
                [[f"{gap:.0f} ms", f"{us:.0f}", f"{us / wake[0]:.2f}"] for gap, us in wake.items()]))
    print(f"load average at end: {load_str()}")
    save_results("cpu", {"rounds": {f"{s} / {c}": v for (s, c), v in got.items()}, "wake_us": wake,
                         "delay_ms": args.delay, "window": WINDOW})


if __name__ == "__main__":
    main()
