"""`ara-spool verify`: check each spool (parse, schema, order, torn tail, state, Ara) and report.

Checks, per run: every line parses and passes the schema; `seq` equals the line's offset and grows;
no torn tail; the state's offset is at a line boundary inside the file; the quarantine holds every
bad line the flusher has passed; file modes; and, when Ara answers, that Ara holds one playbook for
the run and as many results as the shipped part of the spool made (fewer: lost; more: doubled).
The spool dir itself: its mode, and entries the flusher skips (symlinks, unsafe names).

`--repair` never rewrites a line and loses no byte:
- a torn tail (bytes after the last newline, with no writer mid-append: checked under the writers'
  lock) is copied into the quarantine with its reason, then cut from the spool;
- a bad line the flusher has already passed but that is missing from the quarantine (e.g. a lost
  or deleted rejected file) is copied into the quarantine.
Bad lines past the checkpoint are left to the flusher, which quarantines them in order; repairing
them here too would quarantine them twice.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import json
import os
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ara_spool.flusher.config import Config
from ara_spool.flusher.ids import playbook_of
from ara_spool.spool import progress, quarantine
from ara_spool.spool import state as state_mod
from ara_spool.spool.lock import is_locked, try_lock
from ara_spool.spool.paths import (
    REJECTED_SUFFIX,
    SPOOL_SUFFIX,
    RunPaths,
    UnsafeRunId,
    check_run_id,
    group_shared,
    list_runs,
    open_nofollow,
)
from ara_spool.spool.reader import read_lines

RESULT_KINDS = ("result", "event")  # the kinds that make one Ara result each
MAX_LISTED = 20  # problems listed per run; the counts are always complete


MOVED = "moved_from_spool"  # marks a quarantine record whose bytes were cut from the spool


def _quarantined(paths: RunPaths) -> dict[int, int]:
    """offset -> records in the quarantine of lines still in the spool (unreadable records and torn
    tails moved out by --repair, whose offsets a later line reuses, are left out)."""
    out: dict[int, int] = {}
    try:
        fd = open_nofollow(paths.rejected, os.O_RDONLY)
    except FileNotFoundError:
        return out
    with os.fdopen(fd, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
                offset = rec["offset"]
            except (ValueError, KeyError, TypeError):
                continue
            if rec.get(MOVED):
                continue
            if isinstance(offset, int):
                out[offset] = out.get(offset, 0) + 1
    return out


def _quarantine_moved(paths: RunPaths, offset: int, raw: bytes, reason: str) -> None:
    """A quarantine record for bytes about to be cut from the spool (durable before they go)."""
    quarantine.reject(paths, offset, raw, reason, **{MOVED: True})


def _repair_torn_tail(paths: RunPaths) -> int:
    """Under the writers' lock, a tail without its newline is torn for good (a writer holds the lock
    while it writes): copy it to the quarantine, then cut it off. Returns the bytes moved, or -1 when
    a flusher holds the run (it may be reading the tail: cutting it under its feet is not safe)."""
    run_lock = try_lock(paths)
    if run_lock is None:
        return -1
    with run_lock:
        return _cut_torn_tail(paths)


def _cut_torn_tail(paths: RunPaths) -> int:
    fd = open_nofollow(paths.spool, os.O_RDWR)
    try:
        # A writer holds this lock for one line: waiting longer means someone keeps it (a stuck
        # process, or a group member): never hang on it, report the run as busy.
        deadline = time.monotonic() + 5.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return -1
                time.sleep(0.05)
        size = os.fstat(fd).st_size
        start = size
        while start > 0:  # the tail is short unless a writer died mid-way through a huge line
            chunk = os.pread(fd, min(65536, start), start - min(65536, start))
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                start = start - len(chunk) + nl + 1
                break
            start -= len(chunk)
        if start == size:
            return 0
        tail = os.pread(fd, size - start, start)
        _quarantine_moved(paths, start, tail, f"torn tail of {len(tail)} byte(s), moved here by verify --repair")
        os.ftruncate(fd, start)
        os.fsync(fd)
        return len(tail)
    finally:
        os.close(fd)


def _mode_problems(path: Path, what: str) -> list[str]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o660 if group_shared() else 0o600
    if mode & ~allowed & 0o077:
        return [f"{what} {path.name} has mode {mode:04o}: others can read or change it (want {allowed:04o})"]
    return []


async def _read_back(client: Any, cfg: Config, run_id: str, pb: int, st: Any) -> dict[str, Any]:
    """The flusher's read-back comparison (flusher/readback.py), without its repairs: the shipped
    spool's results against Ara's rows, matched on task, host and exact start."""
    from ara_spool.flusher import readback
    from ara_spool.flusher.ids import AraIds

    paths = RunPaths.of(cfg.spool_dir, run_id)
    ids = AraIds(**{k: v for k, v in (st.sink or {}).items() if k in AraIds.__dataclass_fields__})
    wants = readback.expected((ln for ln in read_lines(paths.spool, 0) if ln.end <= st.offset),
                              set(_quarantined(paths)))
    diff = readback.compare(wants, [r async for r in readback.rows(client, "results", playbook=pb)], ids)
    return {"missing": len(diff.missing), "doubled": len(diff.doubles), "out_of_order": diff.out_of_order}


async def _ara_counts(cfg: Config, runs: list[tuple[str, int | None]],
                      states: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per run: playbooks with its label, and the results Ara holds for its playbook."""
    from ara_spool.flusher.client import AraClient, AraError
    from ara_spool.flusher.identity import labelled
    from ara_spool.flusher.mapping import run_label

    out: dict[str, dict[str, Any]] = {}
    async with AraClient(cfg) as client:
        for run_id, known in runs:
            try:
                found = await client.request("GET", "/api/v1/playbooks",
                                             params={"label": run_label(run_id), "limit": "100"})
                # Exactly this run's label: Ara's filter ignores case, run ids do not.
                ids = [pb["id"] for pb in found.get("results", []) if labelled(pb, run_id)]
                pb = known if known is not None else (ids[0] if ids else None)
                results = None
                if pb is not None:
                    got = await client.request("GET", "/api/v1/results", params={"playbook": str(pb), "limit": "1"})
                    results = int(got.get("count", 0))
                out[run_id] = {"playbooks": ids, "playbook": pb, "results": results}
                st = (states or {}).get(run_id)
                if pb is not None and st is not None and playbook_of(st) == pb:
                    out[run_id]["read_back"] = await _read_back(client, cfg, run_id, pb, st)
            except AraError as exc:
                out[run_id] = {"error": str(exc)}
                if "cannot connect" in str(exc):
                    break  # Ara is down: do not wait once per run
    return out


def verify_run(cfg: Config, run_id: str, repair: bool = False, dest: str | None = None) -> dict[str, Any]:
    """Check one run's spool, state and quarantine; repair what can be repaired without loss.
    `dest`: the checkpoint of that destination (default: the one shipped to last)."""
    paths = RunPaths.of(cfg.spool_dir, run_id)
    problems: list[str] = []
    notes: list[str] = []
    report: dict[str, Any] = {"run": run_id, "events": 0, "bad_lines": 0, "torn_tail_bytes": 0, "size": 0,
                              "offset": 0, "quarantined": 0, "shipped_results": 0, "repaired": [],
                              "ara": None, "problems": problems, "notes": notes}
    try:
        size = os.fstat(fd := open_nofollow(paths.spool, os.O_RDONLY)).st_size
        os.close(fd)
    except FileNotFoundError:
        problems.append("no spool file")
        return _finish(report)
    except OSError as exc:
        problems.append(str(exc))
        return _finish(report)
    report["size"] = size
    problems += _mode_problems(paths.spool, "spool file")
    try:
        st = state_mod.load(paths, dest)
    except (ValueError, OSError) as exc:
        problems.append(str(exc))
        st = None
    offset = st.offset if st else 0
    report["offset"] = offset
    in_quarantine = _quarantined(paths)
    report["quarantined"] = sum(in_quarantine.values())
    doubled_q = sorted(o for o, n in in_quarantine.items() if n > 1)
    if doubled_q:
        notes.append(f"{len(doubled_q)} line(s) quarantined more than once (a flusher died between quarantining "
                     f"and its checkpoint), first at offset {doubled_q[0]}")

    last_end = 0
    last_seq = -1
    boundaries = {0}
    listed = 0
    missing: list[Any] = []  # bad lines already passed but not in the quarantine
    pending_bad = 0
    for line in read_lines(paths.spool):
        boundaries.add(line.end)
        last_end = line.end
        if line.event is None:
            # A bad line in the quarantine is accounted for; one the flusher passed without
            # quarantining it is a problem (repairable); one past the checkpoint is pending.
            report["bad_lines"] += 1
            if line.offset in in_quarantine:
                continue
            if line.end <= offset:
                missing.append(line)
                what = "passed by the flusher but not in the quarantine"
            else:
                pending_bad += 1
                what = "the next flush quarantines it"
            if listed < MAX_LISTED:
                problems.append(f"offset {line.offset}: {line.error} ({what})")
                listed += 1
            continue
        report["events"] += 1
        seq = line.event["seq"]
        if (seq != line.offset or seq <= last_seq) and listed < MAX_LISTED:
            problems.append(f"offset {line.offset}: seq {seq} out of order")
            listed += 1
        last_seq = seq
        if line.end <= offset and line.event["kind"] in RESULT_KINDS and line.offset not in in_quarantine \
                and line.event.get("run") == run_id:
            report["shipped_results"] += 1
    report["torn_tail_bytes"] = torn = size - last_end
    if torn:
        problems.append(f"torn tail of {torn} byte(s) at offset {last_end}")
    if (0 if repair else len(missing)) + pending_bad > MAX_LISTED:
        problems.append(f"{len(missing)} bad line(s) passed but not quarantined, {pending_bad} pending in all")
    if st is not None:
        if offset > size:
            problems.append(f"state offset {offset} is past the spool's end {size}")
        elif offset not in boundaries:
            problems.append(f"state offset {offset} is not at a line boundary")
        if not st.clean and not is_locked(paths):
            notes.append("the last flusher did not stop cleanly: the next flush reconciles its tail with Ara")
        problems += _mode_problems(paths.state, "state file")
    problems += _mode_problems(paths.rejected, "quarantine file")

    if repair:
        for line in missing:
            quarantine.reject(paths, line.offset, line.raw, f"{line.error} (found by verify --repair)", end=line.end)
            report["repaired"].append(f"quarantined the bad line at offset {line.offset}")
        missing_at = tuple(f"offset {line.offset}: " for line in missing)
        problems[:] = [p for p in problems if not (missing_at and p.startswith(missing_at))]
        report["quarantined"] += len(missing)
        if torn:
            moved = _repair_torn_tail(paths)
            if moved < 0:
                notes.append("torn tail not repaired: a flusher holds the run (or a process keeps the spool "
                             "locked); try again when it is done")
            elif moved:
                report["repaired"].append(f"moved a torn tail of {moved} byte(s) at offset {last_end} to the "
                                          "quarantine")
                problems.remove(f"torn tail of {torn} byte(s) at offset {last_end}")
                report["quarantined"] += 1
                report["size"] = last_end
    return _finish(report)


def _ara_line(ara: dict[str, Any]) -> str:
    """What Ara holds, in words, naming the Ara asked (the dict itself is in --json)."""
    where = f"Ara at {ara['server']}" if ara.get("server") else "Ara"
    if ara.get("playbook") is None:
        return f"{where} has no playbook for this run (the shipped part of the spool made {ara['expected']} result(s))"
    return (f"{where}: playbook {ara['playbook']} holds {ara['results']} result(s), the shipped part of the spool "
            f"made {ara['expected']}")


def _finish(report: dict[str, Any]) -> dict[str, Any]:
    report["ok"] = not report["problems"]
    parts = [f"{report['run']}: {report['events']} event(s), {report['bad_lines']} bad line(s), "
             f"quarantined {report['quarantined']}, shipped to offset {report['offset']} of {report['size']}"]
    ara = report.get("ara")
    if ara:
        parts.append(_ara_line(ara))
    parts.append("ok" if report["ok"] else "; ".join(report["problems"]))
    if report["notes"]:
        parts.append("note: " + "; ".join(report["notes"]))
    if report["repaired"]:
        parts.append("repaired: " + "; ".join(report["repaired"]))
    report["summary"] = ": ".join(parts[:1]) + ": " + "; ".join(parts[1:])
    return report


def _server_of(cfg: Config, paths: RunPaths, server_given: bool) -> tuple[str, state_mod.RunState | None]:
    """The Ara to compare a run with, and its checkpoint there: `--server` when given, else the
    Ara the run is complete in or was shipped to last (its recorded destination), else the default."""
    if server_given:
        return cfg.server, state_mod.read_state_quiet(paths, cfg.destination)
    try:
        done = progress.complete_in(paths)
    except OSError:
        done = None
    st = done.state if done is not None else state_mod.read_state_quiet(paths)
    recorded = st.dest.removesuffix("/api/v1") if st is not None and st.dest.endswith("/api/v1") else None
    return recorded or cfg.server, st


def _counts(cfg: Config, wanted: list[tuple[str, int | None]],
            states: dict[str, state_mod.RunState]) -> dict[str, dict[str, Any]]:
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_ara_counts(cfg, wanted, states))
        # called from async code (a daemon, a test): its own loop in a thread
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _ara_counts(cfg, wanted, states)).result()
    except Exception as exc:  # a report tool: an Ara problem is a note, never a crash
        return {run: {"error": f"{type(exc).__name__}: {exc}"} for run, _ in wanted}


def _check_ara(cfg: Config, reports: list[dict[str, Any]],
               picks: dict[str, tuple[str, state_mod.RunState | None]]) -> None:
    """Compare each run with what the Ara picked for it holds (skipped for runs a flusher is
    shipping right now)."""
    by_server: dict[str, list[tuple[dict[str, Any], state_mod.RunState | None]]] = {}
    for r in reports:
        if not r.get("size") or r["run"] is None:
            continue
        paths = RunPaths.of(cfg.spool_dir, r["run"])
        if is_locked(paths):
            r["notes"].append("a flusher is shipping this run: Ara not compared")
            continue
        server, st = picks[r["run"]]
        by_server.setdefault(server, []).append((r, st))
    for server, todo in by_server.items():
        _compare(replace(cfg, server=server), todo)


def _compare(cfg: Config, todo: list[tuple[dict[str, Any], state_mod.RunState | None]]) -> None:
    states = {r["run"]: st for r, st in todo if st is not None}
    counts = _counts(cfg, [(r["run"], playbook_of(st)) for r, st in todo], states)
    for r, st in todo:
        got = counts.get(r["run"], {"error": "Ara not reached"})
        if "error" in got:
            r["notes"].append(f"Ara at {cfg.display_server} not compared: {got['error']}")
            _finish(r)
            continue
        n_pb = len(got["playbooks"])
        if n_pb > 1:
            r["problems"].append(f"{n_pb} playbooks in Ara carry this run's label (ids {got['playbooks']})")
        pb = playbook_of(st)
        if pb is not None and got["playbooks"] and pb not in got["playbooks"]:
            r["problems"].append(f"the state's playbook {pb} does not carry this run's label in Ara")
        held, want = got["results"], r["shipped_results"]
        r["ara"] = {"server": cfg.display_server, "playbook": got["playbook"], "results": held, "expected": want}
        back = got.get("read_back")
        if back is not None:
            r["read_back"] = back
            if back["missing"] or back["doubled"] or back["out_of_order"]:
                r["problems"].append(f"read-back of playbook {got['playbook']}: {back['missing']} missing, "
                                     f"{back['doubled']} doubled, {back['out_of_order']} out of their host's "
                                     "order")
        if held is None:
            if want:
                r["problems"].append(f"Ara has no playbook for this run, but {want} result(s) were shipped")
        elif held < want:
            r["problems"].append(f"Ara holds {held} result(s) for playbook {got['playbook']}, the shipped part of "
                                 f"the spool made {want}: {want - held} missing")
        elif held > want:
            msg = (f"Ara holds {held} result(s) for playbook {got['playbook']}, the shipped part of the spool made "
                   f"{want}: {held - want} more")
            if st is not None and not st.clean:
                r["notes"].append(msg + " (shipped after the last checkpoint; the next flush reconciles them)")
            else:
                r["problems"].append(msg + " (doubled, or results from elsewhere under this run's playbook)")
        _finish(r)


def _spool_dir_report(cfg: Config, named: list[str] | None) -> dict[str, Any] | None:
    """Entries of the spool dir that the flusher skips, and the dir's own mode."""
    problems: list[str] = []
    d = Path(cfg.spool_dir)
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        problems.append(f"spool dir {d} is a symlink; the flusher refuses it")
    elif stat.S_IMODE(st.st_mode) & (0o002 if group_shared() else 0o077):
        problems.append(f"spool dir {d} has mode {stat.S_IMODE(st.st_mode):04o}: others can list or add files")
    if not problems and named is None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            name = entry.name
            if not name.endswith(SPOOL_SUFFIX) or name.endswith(REJECTED_SUFFIX):
                continue
            try:
                check_run_id(name[: -len(SPOOL_SUFFIX)])
            except UnsafeRunId:
                problems.append(f"{name}: unsafe run id in the file name; the flusher skips it")
                continue
            if entry.is_symlink():
                problems.append(f"{name} is a symlink; the flusher refuses it")
            elif not entry.is_file(follow_symlinks=False):
                problems.append(f"{name} is not a regular file; the flusher skips it")
    if not problems:
        return None
    report = {"run": None, "events": 0, "bad_lines": 0, "torn_tail_bytes": 0, "size": 0, "offset": 0,
              "quarantined": 0, "shipped_results": 0, "repaired": [], "ara": None, "problems": problems,
              "notes": []}
    report = _finish(report)
    report["summary"] = f"spool dir {d}: " + "; ".join(problems)
    return report


def verify(cfg: Config, runs: list[str] | None, repair: bool = False,
           ara: bool = True, server_given: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """Verify the named runs (default: every run in the spool dir); ara=False skips the Ara check.
    Each run is compared with the Ara it was shipped to; `server_given`: with cfg.server."""
    names = runs or list_runs(cfg.spool_dir)
    picks = {r: _server_of(cfg, RunPaths.of(cfg.spool_dir, r), server_given) for r in names}
    report = [verify_run(cfg, r, repair, dest=st.dest if st is not None else None) for r, (_, st) in picks.items()]
    if ara:
        _check_ara(cfg, report, picks)
    dir_report = _spool_dir_report(cfg, runs)
    if dir_report is not None:
        report.append(dir_report)
    return report, all(r["ok"] for r in report)


def raw_of(record: dict[str, Any]) -> bytes:
    """The bytes a quarantine record keeps (for tests and tools)."""
    if "raw_b64" in record:
        return base64.b64decode(record["raw_b64"])
    return str(record.get("raw", "")).encode("utf-8")
