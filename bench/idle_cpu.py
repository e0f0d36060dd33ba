"""The idle daemon's CPU with many finished runs kept in the spool (README: Running as a service).

Spools N finished runs whose checkpoints say they are wholly in an Ara (no Ara is needed: an idle
daemon sends nothing), starts `ara-spool flush --follow` on them, waits for its first scans, then
reads its CPU time from /proc over a window. Prints one line per N.

    .venv/bin/python bench/idle_cpu.py [--quick] [--runs 1 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ara_spool.flusher.config import destination
from ara_spool.spool import writer
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import RunState, save

SERVER = "http://127.0.0.1:9"  # never asked: every run is in Ara already


def spool_finished(spool: Path, n: int) -> None:
    for i in range(n):
        rid = f"idle-{i:05d}"
        writer.append(rid, "run_start", {"path": "/x.yml", "name": "x", "ansible_version": "2.19", "labels": [],
                                         "metadata": {}}, spool_dir=spool)
        writer.append(rid, "run_end", {"status": "completed"}, spool_dir=spool)
        size = (spool / f"{rid}.jsonl").stat().st_size
        save(RunPaths.of(spool, rid), RunState(rid, dest=destination(SERVER), offset=size, shipped=2, ended=True,
                                               final_status="completed", sink={"playbook": i + 1}), durable=False)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(n: int, seconds: float) -> float:
    spool = Path(tempfile.mkdtemp(prefix="ara-spool-idle-"))
    try:
        spool_finished(spool, n)
        env = dict(os.environ, ARA_SPOOL_DIR=str(spool), ARA_API_SERVER=SERVER)
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "--follow"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(8)  # start-up and the first full scans
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        finally:
            proc.terminate()
            proc.wait(20)
        return 100 * (c1 - c0) / (t1 - t0)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 s windows")
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    seconds = 20.0 if args.quick else args.seconds
    print("| finished runs | idle CPU (% of a core) |\n|---|---|")
    for n in args.runs:
        print(f"| {n} | {measure(n, seconds):.2f} |")


if __name__ == "__main__":
    main()
