"""Flusher memory while shipping large spools: peak RSS, and whether it stays flat as the spool grows.

Spools of 10k / 100k / 1M events, written as the callback writes them (20 hosts: task_start,
20 results, task_end per task). Shipping 1M events to a real Ara takes hours (~100 results/s), so
the sizes are shipped to a FAKE Ara (bench/fake_ara.py, an aiohttp server in a separate process
that answers every POST with an incrementing id and every GET with an empty list): the figures
are the flusher's own memory, not Ara's. Plus one real-Ara check (gunicorn, sqlite) at 10k.

Measured per size: peak RSS of the `ara-spool flush` process (ru_maxrss from wait4), RSS sampled
every 0.2 s (at 25/50/75/100 % of the wall time), wall time, events/s, size of the .state file.
Target: peak <= 100 MB, flat from 10k to 1M.

    python bench/memory.py            # full: 10k, 100k, 1M events (fake Ara) + 10k (real Ara)
    python bench/memory.py --quick    # smoke: 2k, 10k, 40k (fake Ara) + 1k (real Ara)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BIN,
    AraAPI,
    AraServer,
    banner,
    build_run,
    flusher_env,
    kill_group,
    load_str,
    machine,
    port,
    read_state,
    save_results,
    table,
    tempdir,
    wait_http,
)

HERE = Path(__file__).resolve().parent
HOSTS = 20


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def flush_measured(url: str, work: Path, events: int) -> dict[str, Any]:
    run_id = f"mem-{uuid.uuid4().hex[:10]}"
    spool = work / f"spool-{run_id}"
    t0 = time.perf_counter()
    b = build_run(spool, run_id, HOSTS, 0, max_events=events)
    build_s = time.perf_counter() - t0
    size = b.path.stat().st_size
    env = flusher_env(url, spool)
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "ara-spool"), "flush", "--quiet", "--run", run_id], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            r = rss_mb(proc.pid)
            if r is not None:
                samples.append((time.perf_counter() - t0, r))
            done.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"flush rc={proc.returncode}: {err[-1500:]}")
    st = read_state(spool, run_id)
    if st["shipped"] != b.events or not st["ended"]:
        raise RuntimeError(f"flush incomplete: {st['shipped']}/{b.events}")

    def at(frac: float) -> float:
        pts = [r for t, r in samples if t <= frac * wall]
        return pts[-1] if pts else float("nan")

    return {"events": b.events, "results": b.results, "spool_mb": size / 2**20, "build_s": build_s, "wall": wall,
            "events_per_s": b.events / wall, "peak_rss_mb": ru.ru_maxrss / 1024,
            "rss_25": at(0.25), "rss_50": at(0.5), "rss_75": at(0.75), "rss_end": samples[-1][1] if samples else None,
            "state_kb": (spool / f"{run_id}.state").stat().st_size / 1024, "requests": st["requests"],
            "cpu_s": ru.ru_utime + ru.ru_stime, "run_id": run_id, "load": load_str()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", help="comma-separated event counts for the fake-Ara runs")
    ap.add_argument("--real", type=int, help="events for the real-Ara check")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else \
        ([2000, 10000, 40000] if args.quick else [10_000, 100_000, 1_000_000])
    real_n = args.real or (1000 if args.quick else 10_000)
    info = machine()
    banner("flusher memory (peak RSS of `ara-spool flush`)", info)
    print(f"spools of {', '.join(f'{s:,}' for s in sizes)} events ({HOSTS} hosts per task) shipped to a FAKE Ara "
          "(bench/fake_ara.py: separate process, incrementing ids, empty GETs; it measures the flusher, not Ara); "
          f"plus {real_n:,} events to a real Ara (gunicorn 4 workers, sqlite)")
    rows = []
    data: dict[str, Any] = {"machine": info, "fake": [], "real": None}
    with tempdir("ara-spool-bench-mem-") as work:
        p = port()
        fake = subprocess.Popen([str(BIN / "python"), str(HERE / "fake_ara.py"), "--port", str(p)],
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{p}/api/")
            for n in sizes:
                r = flush_measured(f"http://127.0.0.1:{p}", work, n)
                data["fake"].append(r)
                print(f"  fake Ara {n:>9,} events: peak {r['peak_rss_mb']:.1f} MB, {r['wall']:.1f}s "
                      f"(load {r['load']})", flush=True)
                rows.append(["fake Ara", f"{r['events']:,}", f"{r['spool_mb']:.0f}", r["peak_rss_mb"], r["rss_25"],
                             r["rss_50"], r["rss_75"], r["wall"], r["events_per_s"], r["cpu_s"], r["state_kb"]])
                (work / f"spool-{r['run_id']}" / f"{r['run_id']}.jsonl").unlink()
        finally:
            kill_group(fake)
        server = AraServer(work / "ara", kind="gunicorn", workers=4).start()
        try:
            r = flush_measured(server.url, work, real_n)
            api = AraAPI(server.url)
            pb = api.playbook_for(r["run_id"])
            n_ara = api.get("results", playbook=pb["id"], limit=1)["count"]
            r["results_in_ara"] = n_ara
            r["complete"] = n_ara == r["results"] and pb["status"] == "completed"
            data["real"] = r
            rows.append(["real Ara (gunicorn)", f"{r['events']:,}", f"{r['spool_mb']:.0f}", r["peak_rss_mb"],
                         r["rss_25"], r["rss_50"], r["rss_75"], r["wall"], r["events_per_s"], r["cpu_s"],
                         r["state_kb"]])
            print(f"  real Ara {real_n:,} events: {n_ara}/{r['results']} results in Ara, complete={r['complete']}")
        finally:
            server.stop()
    print()
    print(table(["server", "events", "spool MB", "peak RSS MB", "RSS @25% MB", "@50%", "@75%", "wall s",
                 "events/s", "flusher CPU s", "state file KB"], rows))
    peaks = [r["peak_rss_mb"] for r in data["fake"]]
    flat = max(peaks) - min(peaks)
    ok = max(peaks + [data["real"]["peak_rss_mb"]]) <= 100
    print(f"target peak <= 100 MB: {'MET' if ok else 'MISSED'} (max {max(peaks):.1f} MB); growth from "
          f"{sizes[0]:,} to {sizes[-1]:,} events: {flat:+.1f} MB")
    print(f"load average at end: {load_str()}")
    save_results("memory", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
