"""The spool on its own: concurrent writers, torn tails, bad lines, safe paths, atomic state."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest
from ara_spool.spool import schema, writer
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import RunPaths, UnsafeRunId, UnsafeSpoolPath, check_run_id, list_runs
from ara_spool.spool.reader import LineSplitter, read_lines, tail_info
from ara_spool.spool.state import RunState, load, save


def _appender(args):
    spool_dir, run_id, writer_no, n = args
    for i in range(n):
        writer.append(run_id, "event", {"task": f"w{writer_no}", "status": "ok", "host": f"h{writer_no}",
                                        "details": {"i": i, "pad": "x" * (i % 300)}}, spool_dir=spool_dir)


def test_twenty_processes_append_whole_lines(spool_dir):
    n_writers, n = 20, 1000
    with multiprocessing.get_context("fork").Pool(n_writers) as pool:
        pool.map(_appender, [(spool_dir, "conc", w, n) for w in range(n_writers)])
    lines = list(read_lines(spool_dir / "conc.jsonl"))
    assert len(lines) == n_writers * n
    assert all(line.event is not None for line in lines), [line.error for line in lines if line.error][:3]
    # seq is the line's own offset: unique and increasing in file order.
    assert [line.event["seq"] for line in lines] == [line.offset for line in lines]
    for w in range(n_writers):
        mine = [line.event["event"]["details"]["i"] for line in lines if line.event["event"]["task"] == f"w{w}"]
        assert mine == list(range(n))  # each writer's own events stay in its order
    assert tail_info(spool_dir / "conc.jsonl") == (n_writers * n, 0)


def test_torn_tail_is_not_data_and_next_append_heals_it(spool_dir):
    writer.append("torn", "event", {"task": "a", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    path = spool_dir / "torn.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"v":1,"run":"torn","seq":')  # a writer killed mid-line
    lines = list(read_lines(path))
    assert len(lines) == 1 and lines[0].event is not None
    assert tail_info(path)[1] > 0
    ev = writer.append("torn", "event", {"task": "b", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    lines = list(read_lines(path))
    assert [line.event is not None for line in lines] == [True, False, True]
    assert "malformed JSON" in lines[1].error
    assert lines[2].event["event"]["task"] == "b" and lines[2].offset == ev["seq"]


@pytest.mark.parametrize("raw,reason", [
    (b"{nope", "malformed JSON"),
    (b"[1,2]", "not an object"),
    (b'{"v":2,"run":"r","seq":0,"ts":"2026-01-01T00:00:00Z","kind":"event"}', "unknown schema version"),
    (b'{"v":1,"run":"r","seq":0,"ts":"2026-01-01T00:00:00Z","kind":"bogus"}', "unknown kind"),
    (b'{"v":1,"run":"r","seq":0,"ts":"yesterday","kind":"event","event":{}}', "not an ISO 8601 time"),
    (b'{"v":1,"run":"r","seq":0,"ts":"2026-01-01T00:00:00Z","kind":"event","event":{"task":"t","host":"h"}}',
     "lacks status"),
    (b'{"v":1,"run":"r","seq":0,"ts":"2026-01-01T00:00:00Z","kind":"event",'
     b'"event":{"task":"t","host":"h","status":"changed"}}', "is not one of"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"a":"\x00"}', "NUL byte"),
    (b"   ", "empty line"),
])
def test_bad_lines_are_reported_with_a_reason(raw, reason):
    [line] = list(LineSplitter(0).feed(raw + b"\n"))
    assert line.event is None and reason in line.error


def test_overlong_line_is_reported_without_holding_it(spool_dir):
    splitter = LineSplitter(0, max_line=1000)
    lines = list(splitter.feed(b"x" * 700)) + list(splitter.feed(b"x" * 700)) + list(splitter.feed(b"x\n{}\n"))
    assert len(lines) == 2 and "exceeds 1000" in lines[0].error and lines[0].end == 1402
    assert lines[1].offset == 1402


def test_writer_truncates_huge_content(spool_dir):
    ev = writer.append("huge", "event", {"task": "t", "status": "ok", "host": "h", "details": "y" * (9 << 20)},
                       spool_dir=spool_dir)
    [line] = list(read_lines(spool_dir / "huge.jsonl"))
    assert line.event["event"]["details"]["ara_spool_truncated"] is True
    assert line.event["event"]["details"]["original_bytes"] > 9 << 20 and ev["seq"] == 0


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", "-rf", ".hidden", "a..b", "x" * 200, "a b", "a\nb"])
def test_unsafe_run_ids_are_refused(run_id, spool_dir):
    with pytest.raises(UnsafeRunId):
        check_run_id(run_id)
    with pytest.raises(UnsafeRunId):
        writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    assert list(spool_dir.iterdir()) == []


def test_symlinked_spool_file_is_refused(spool_dir, tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    (spool_dir / "sym.jsonl").symlink_to(target)
    with pytest.raises(UnsafeSpoolPath):
        writer.append("sym", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    assert target.read_text() == ""
    assert "sym" not in list_runs(spool_dir)


def test_symlinked_spool_dir_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafeSpoolPath):
        writer.append("r", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=tmp_path / "link")
    assert list(real.iterdir()) == []


def test_new_spool_dir_and_files_are_private(tmp_path):
    d = tmp_path / "new" / "spool"
    writer.append("perm", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=d)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / "perm.jsonl").st_mode) == 0o600


def test_state_roundtrip_and_atomic_replace(spool_dir):
    paths = RunPaths.of(spool_dir, "st")
    st = RunState("st", dest="http://a/api/v1", offset=42, shipped=3)
    st.sink["playbook"] = 7
    st.sink["tasks"] = {"u": 9}
    save(paths, st)
    again = load(paths)
    assert again.dest == "http://a/api/v1"
    assert again.offset == 42 and again.sink["playbook"] == 7 and again.sink["tasks"] == {"u": 9}
    assert [p.name for p in spool_dir.iterdir()] == ["st.state"]  # no temp file left behind
    # A second destination has a checkpoint of its own; the first one is kept as it was.
    other = load(paths, "http://b/api/v1")
    assert other.fresh and other.offset == 0
    other.offset = 5
    save(paths, other)
    assert load(paths).dest == "http://b/api/v1"  # the last one shipped to is the current one
    first = load(paths, "http://a/api/v1")
    assert first.offset == 42 and first.sink["playbook"] == 7
    assert sorted(first.destinations()) == ["http://a/api/v1", "http://b/api/v1"]
    paths.state.write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        load(paths)


def test_run_lock_is_exclusive(spool_dir):
    paths = RunPaths.of(spool_dir, "lk")
    first = try_lock(paths)
    assert first is not None
    assert try_lock(paths) is None
    first.close()
    second = try_lock(paths)
    assert second is not None
    second.close()


def test_schema_validate_accepts_writer_output(spool_dir):
    ev = writer.append("ok", "result", {"task_uuid": "t", "play_uuid": "p", "host": "h", "status": "ok",
                                        "started": schema.now_iso(), "ended": schema.now_iso()}, spool_dir=spool_dir)
    assert schema.validate(json.loads((spool_dir / "ok.jsonl").read_text())) == ev


_BIG_WRITER = """
import os, sys, time
from ara_spool.spool import writer
# Short, slow writes, as a slow or remote filesystem gives them: a 4 MB line takes ~64 write calls
# of 1 ms or more, most of each append's time, so a kill at a random moment lands mid-line (one
# 4 MB write to a local file cannot be interrupted, and encoding the line takes a while too).
_write = os.write
def _short_write(fd, data):
    time.sleep(0.001)
    return _write(fd, bytes(memoryview(data)[:65536]))
os.write = _short_write
print("ready", flush=True)
while True:
    writer.append(sys.argv[2], "event", {"task": "big", "status": "ok", "host": "h",
                                         "details": {"blob": "z" * 4_000_000}}, spool_dir=sys.argv[1])
"""


def test_writer_sigkilled_mid_append_never_yields_a_torn_event(spool_dir):
    """A real writer process killed at random moments while appending 4 MB lines: a torn line is
    never data, the next append heals it, and every whole line is a valid event."""
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(7)
    mine = []
    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", _BIG_WRITER, str(spool_dir), "torn-kill"],
                                cwd=os.path.dirname(os.path.dirname(__file__)), stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # imported, writing now
        time.sleep(rng.uniform(0.15, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mine.append(writer.append("torn-kill", "event", {"task": "after", "status": "ok", "host": "h"},
                                  spool_dir=spool_dir)["seq"])
    lines = list(read_lines(spool_dir / "torn-kill.jsonl"))
    good = [ln for ln in lines if ln.event is not None]
    bad = [ln for ln in lines if ln.event is None]
    assert {ln.offset for ln in good} >= set(mine)  # every append after a kill is whole
    assert all(ln.event["seq"] == ln.offset for ln in good)
    assert len(good) > len(mine)  # the killed writers did complete some lines
    assert bad, "no kill landed mid-write (about half of them do)"
    for ln in bad:  # each bad line is a torn prefix of a 4 MB event, nothing else
        assert ln.raw.startswith(b'{"v":1,"run":"torn-kill"') and "malformed JSON" in ln.error
    assert tail_info(spool_dir / "torn-kill.jsonl")[1] == 0
    (spool_dir / "torn-kill.jsonl").unlink()  # ~400 MB of 4 MB lines: not left behind in /tmp


def test_version_1_state_is_offered_to_the_next_destination(spool_dir):
    """A checkpoint written before destinations were recorded (v1): read as 'unknown', adopted by
    the destination that ships next (the flusher then checks its ids against that Ara)."""
    paths = RunPaths.of(spool_dir, "old")
    paths.state.write_text(json.dumps({"version": 1, "run_id": "old", "offset": 10, "shipped": 2, "clean": True,
                                       "ids": {"playbook": 3, "tasks": {"t": 4}}}))
    st = load(paths, "http://a/api/v1")
    assert st.dest == "http://a/api/v1" and st.offset == 10 and st.sink["playbook"] == 3 and not st.fresh
    save(paths, st)
    raw = json.loads(paths.state.read_text())
    assert raw["version"] == 2 and list(raw["destinations"]) == ["http://a/api/v1"]
