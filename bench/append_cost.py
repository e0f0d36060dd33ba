"""Append cost per event, in-process: spool.writer.append of a typical result event.

What the callback pays per task result, in the ansible-playbook main process: build the event,
JSON-encode it, open the spool (O_APPEND, no symlinks), flock, check the tail, write, close.
Reported: p50/p90/p99 in microseconds, plus the parts (encode alone; open+lock+write+close) so a
regression can be placed. Target: p50 <= 50 us.

    python bench/append_cost.py            # full: 5 rounds x 20,000 appends
    python bench/append_cost.py --quick    # smoke: 2 rounds x 2,000 appends
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ara_spool.spool import schema, writer  # noqa: E402
from ara_spool.spool.paths import open_nofollow  # noqa: E402
from common import banner, machine, median, pct, save_results, table, tempdir  # noqa: E402


def result_body(i: int) -> dict:
    """A result event as the callback writes it for a `debug` task (one host)."""
    return {
        "task_uuid": f"0242ac11-0002-7a3f-1c2d-00000000{i % 10000:04d}",
        "play_uuid": "0242ac11-0002-7a3f-1c2d-000000000001",
        "host": "web1.example.com", "delegated_to": [], "status": "ok", "changed": False,
        "ignore_errors": False,
        "started": "2025-01-01T10:00:00.123456+00:00", "ended": "2025-01-01T10:00:00.234567+00:00",
        "content": {"msg": f"hello web1.example.com step {i}", "changed": False,
                    "_ansible_verbose_always": True},
        "task_name": f"step {i}", "action": "ansible.builtin.debug", "path": "/srv/ansible/site.yml",
        "lineno": 12 + i % 300,
    }


def measure(spool_dir: Path, n: int) -> dict[str, list[float]]:
    run = "bench-append"
    full, enc, io = [], [], []
    pc = time.perf_counter_ns
    bodies = [result_body(i) for i in range(n)]
    for i in range(200):  # warm up: imports, page cache, first file creation
        writer.append(run, "result", bodies[i % n], spool_dir=spool_dir)
    for body in bodies:
        t0 = pc()
        writer.append(run, "result", body, spool_dir=spool_dir)
        full.append((pc() - t0) / 1000)
    # The parts, measured separately on the same events.
    path = spool_dir / f"{run}.jsonl"
    for body in bodies:
        ev = schema.make_event(run, "result", body)
        t0 = pc()
        line = writer.encode(ev)
        enc.append((pc() - t0) / 1000)
        t0 = pc()
        fd = open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        os.pread(fd, 1, size - 1)
        os.write(fd, line)
        os.close(fd)
        io.append((pc() - t0) / 1000)
    return {"append": full, "encode": enc, "open_lock_write_close": io}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-n", type=int, help="appends per round")
    ap.add_argument("--rounds", type=int)
    args = ap.parse_args()
    n = args.n or (2000 if args.quick else 20000)
    rounds = args.rounds or (2 if args.quick else 5)
    info = machine()
    banner("append cost per event (spool.writer.append, in-process)", info)
    line_len = len(writer.encode(schema.make_event("bench-append", "result", result_body(1))))
    print(f"event: a debug task's result, {line_len} bytes as a spool line; {rounds} rounds x {n} appends; "
          f"ARA_SPOOL_FSYNC off (the default)")
    samples: dict[str, list[float]] = {"append": [], "encode": [], "open_lock_write_close": []}
    per_round = []
    for _ in range(rounds):
        with tempdir("ara-spool-bench-append-") as d:
            r = measure(d / "spool", n)
        per_round.append(median(r["append"]))
        for k, v in r.items():
            samples[k] += v
    rows = [[k, len(v), median(v), pct(v, 90), pct(v, 99), max(v)] for k, v in samples.items()]
    print(table(["part", "n", "p50 us", "p90 us", "p99 us", "max us"], rows))
    p50 = median(samples["append"])
    print(f"per-round p50 (us): {', '.join(f'{x:.1f}' for x in per_round)}")
    verdict = "MET" if p50 <= 50 else "MISSED"
    print(f"target p50 <= 50 us: {verdict} (p50 {p50:.1f} us)")
    info["loadavg_end"] = info.get("loadavg_end")
    save_results("append_cost", {
        "machine": info, "n": n, "rounds": rounds, "line_bytes": line_len,
        "summary": {k: {"p50": median(v), "p90": pct(v, 90), "p99": pct(v, 99), "max": max(v)}
                    for k, v in samples.items()},
        "per_round_p50": per_round, "target_met": p50 <= 50,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
