"""What the read-back pass (flusher/readback.py) costs: requests and seconds per 1,000 results.

A run of H hosts x T tasks is shipped to a real Ara (gunicorn, sqlite); then the read-back is run
against it R times (list the run's results 1,000 a request, match them with the spool's lines; no
double to delete). Prints requests and the median seconds per 1,000 results.

    .venv/bin/python bench/readback.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ara_spool.flusher import oneshot, readback
from ara_spool.flusher.client import AraClient
from ara_spool.flusher.config import Config
from ara_spool.flusher.ids import AraIds
from ara_spool.spool import state as state_mod
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.reader import read_lines
from common import ara_server as start_ara
from common import banner, build_run, load_str, machine, median, save_results, table, tempdir


async def one(cfg: Config, run_id: str) -> tuple[int, float, int]:
    paths = RunPaths.of(cfg.spool_dir, run_id)
    st = state_mod.load(paths, cfg.destination)
    ids = AraIds(**{k: v for k, v in st.sink.items() if k in AraIds.__dataclass_fields__})
    t0 = time.perf_counter()
    wants = readback.expected(read_lines(paths.spool, 0), set())
    async with AraClient(cfg) as client:
        report = await readback.read_back(client, ids.playbook, wants, ids)
    took = time.perf_counter() - t0
    d = report.diff
    assert not (d.missing or d.doubles or d.out_of_order), d
    return report.requests, took, d.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [(10, 100)] if args.quick else [(10, 100), (20, 250)]
    banner("read-back cost", machine())
    rows, data = [], []
    with tempdir("bench-readback-") as base, start_ara(base / "ara") as server:
        for hosts, tasks in sizes:
            spool = base / f"spool-{hosts}x{tasks}"
            spool.mkdir(mode=0o700)
            run_id = f"rb-{hosts}x{tasks}"
            build_run(spool, run_id, hosts, tasks)
            cfg = Config(server=server.url, spool_dir=spool, timeout=60)
            cfg.check()
            [out] = asyncio.run(oneshot.flush(cfg, [run_id], timeout=300))
            assert out.status == "done", out
            runs = [asyncio.run(one(cfg, run_id)) for _ in range(args.rounds)]
            n = runs[0][2]
            secs = median([r[1] for r in runs])
            rows.append([f"{hosts}x{tasks}", n, runs[0][0], f"{runs[0][0] * 1000 / n:.1f}",
                         f"{secs:.2f}", f"{secs * 1000 / n:.2f}"])
            data.append({"hosts": hosts, "tasks": tasks, "results": n, "requests": runs[0][0],
                         "seconds": [r[1] for r in runs]})
    print(table(["run", "results", "requests", "requests / 1,000", "seconds (median)", "seconds / 1,000"], rows))
    print(f"load: {load_str()}")
    save_results("readback", {"runs": data})


if __name__ == "__main__":
    main()
