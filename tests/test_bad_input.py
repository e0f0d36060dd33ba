"""Bad input for the spool reader and the flusher, against a real Ara.

Every complete line ends either shipped (one result in Ara) or quarantined with its reason; a torn
tail is neither until a writer ends it; nothing crashes or blocks the run; nothing outside the
spool dir is read or written (a sentinel directory, the target of every symlink, stays the same).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ara_spool.flusher import oneshot
from ara_spool.spool import writer
from ara_spool.spool.paths import RunPaths, UnsafeSpoolPath, list_runs
from ara_spool.spool.reader import read_lines
from ara_spool.spool.state import load

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def ts(i: int) -> str:
    return (T0 + timedelta(seconds=i)).isoformat(timespec="microseconds")


def event(run_id: str, i: int, **over: Any) -> dict[str, Any]:
    """A valid explicit event whose time (and so its Ara result's `ended`) is unique: ts(i)."""
    ev = {"v": 1, "run": run_id, "seq": 0, "ts": ts(i), "kind": "event",
          "event": {"task": f"t{i % 3}", "status": "ok", "host": f"h{i % 4}", "details": {"i": i}}}
    for key, value in over.items():
        if key in ("task", "status", "host", "details", "duration"):
            ev["event"][key] = value
        else:
            ev[key] = value
    return ev


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def snapshot(root: Path) -> dict[str, tuple[int, str, float]]:
    """Every entry under root: mode, content hash (files) or link target, mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            if p.is_symlink():
                what = "->" + os.readlink(p)
            elif p.is_file():
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = "dir"
            out[str(p.relative_to(root))] = (st.st_mode, what, st.st_mtime)
    return out


@pytest.fixture
def sentinel(tmp_path: Path):
    """A directory outside the spool dir, full of tempting targets: it must not change."""
    d = tmp_path / "sentinel"
    d.mkdir()
    # Valid-looking spool lines: if anything followed a symlink here, they would show up in Ara.
    lines = b"".join(dumps(event("sym", i)) + b"\n" for i in range(3))
    for name in ("sym.jsonl", "target.jsonl", "state.json", "rejected.jsonl", "lock"):
        (d / name).write_bytes(lines)
    (d / "sub").mkdir()
    (d / "sub" / "x.jsonl").write_bytes(lines)
    before = snapshot(d)
    yield d
    assert snapshot(d) == before, "something outside the spool dir was written"


def quarantined(spool_dir: Path, run_id: str) -> dict[int, tuple[str, bytes]]:
    """offset -> (reason, raw bytes) of the run's quarantine records."""
    path = spool_dir / f"{run_id}.rejected.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_bytes().splitlines():
        rec = json.loads(line)
        if "raw_file" in rec:  # a line too long for its record: kept whole in a file of its own
            assert rec["raw_file"] == f"{run_id}.rejected.{rec['offset']}.line"
            raw = (spool_dir / rec["raw_file"]).read_bytes()
        else:
            raw = base64.b64decode(rec["raw_b64"]) if "raw_b64" in rec else rec["raw"].encode("utf-8", "surrogatepass")
        assert rec["offset"] not in out, f"offset {rec['offset']} quarantined twice"
        out[rec["offset"]] = (rec["reason"], raw)
    return out


# (name, raw line without its newline, expected fate, reason fragment). `ship`: one result in
# Ara; `quarantine`: a record with that reason; `either`: exactly one of the two.
def corpus(run_id: str) -> list[tuple[str, bytes, str, str]]:
    def ev(i: int, **over: Any) -> bytes:
        return dumps(event(run_id, i, **over))

    deep = 100_000
    base = ev(900)[:-2]  # '...,"details":{"i":900}}' without its two closing braces
    return [
        ("malformed JSON", b'{"v":1,"run":', "quarantine", "malformed JSON"),
        ("not JSON at all", b"hello world", "quarantine", "malformed JSON"),
        ("JSON array", b"[1,2,3]", "quarantine", "not an object"),
        ("JSON string", b'"an event"', "quarantine", "not an object"),
        ("JSON number", b"42", "quarantine", "not an object"),
        ("JSON null", b"null", "quarantine", "not an object"),
        ("empty object", b"{}", "quarantine", "unknown schema version"),
        ("schema v2", ev(1, v=2), "quarantine", "unknown schema version 2"),
        ("schema v as string", ev(2, v="1"), "quarantine", "unknown schema version"),
        ("seq not int", ev(3, seq="3"), "quarantine", "'seq'"),
        ("unknown kind", ev(4, kind="hack"), "quarantine", "unknown kind"),
        ("body not an object", dumps({**event(run_id, 5), "event": [1]}), "quarantine", "without an object"),
        ("missing host", dumps({**event(run_id, 6), "event": {"task": "t", "status": "ok"}}), "quarantine",
         "lacks host"),
        ("bad status", ev(7, status="changed"), "quarantine", "is not one of"),
        ("bad time", ev(8, ts="yesterday"), "quarantine", "not an ISO 8601 time"),
        ("negative duration", ev(9, duration=-1), "quarantine", "non-negative"),
        ("bool duration", ev(10, duration=True), "quarantine", "non-negative"),
        ("other run's event", ev(11, run="someone-else"), "quarantine", "event of run 'someone-else'"),
        ("non-UTF-8 byte", ev(12, host="h\udcff").replace(b"\\udcff", b"\xff"), "quarantine", "not UTF-8"),
        ("latin-1 text", "{\"note\":\"caf\xe9\"}".encode("latin-1"), "quarantine", "not UTF-8"),
        ("raw NUL byte", ev(13)[:-2] + b',"x":"\x00"}}', "quarantine", "NUL byte"),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + ev(14), "quarantine", "malformed JSON"),
        ("empty line", b"", "quarantine", "empty line"),
        ("blank line", b" \t ", "quarantine", "empty line"),
        ("deeply nested JSON", b"[" * deep + b"]" * deep, "quarantine", "nested"),
        ("deeply nested details", base + b',"d":' + b"[" * deep + b"]" * deep + b"}}", "quarantine", "nested"),
        ("infinite duration", ev(15)[:-2] + b',"duration":1e400}}', "quarantine", "cannot map"),
        ("NaN duration", ev(16)[:-2] + b',"duration":NaN}}', "quarantine", "cannot map"),
        ("duration past year 1", ev(17, ts="0001-01-01T00:00:01+00:00", duration=5.0), "quarantine", "cannot map"),
        ("huge lineno", dumps({**event(run_id, 18), "event": {**event(run_id, 18)["event"], "lineno": 10**30}}),
         "either", ""),
        # Valid, if odd: these must ship.
        ("escaped NUL in details", ev(19, details={"s": "a\u0000b"}), "ship", ""),
        ("CRLF line end", ev(20) + b"\r", "ship", ""),
        ("unicode host and task", ev(21, host="hôte-日本", task="tâche ✓"), "ship", ""),
        ("300-char host", ev(22, host="h" * 300), "ship", ""),
        ("10k-char task name", ev(23, task="n" * 10_000), "ship", ""),
        ("unknown extra fields", dumps({**event(run_id, 24), "future": {"x": 1}}), "ship", ""),
        ("lone surrogate in details", ev(25, details={"s": "\ud800"}), "either", ""),
        ("lone surrogate in host", ev(26, host="h\ud800"), "either", ""),
    ]


async def test_bad_input_corpus_each_line_shipped_or_quarantined(cfg, ara, spool_dir, sentinel):
    run_id = "bad-corpus"
    path = spool_dir / f"{run_id}.jsonl"
    fates: dict[int, tuple[str, str, str, str | None]] = {}  # offset -> (name, fate, reason, ended)
    good_i = 1000

    def put(raw: bytes) -> int:
        offset = path.stat().st_size if path.exists() else 0
        with open(path, "ab") as fh:
            fh.write(raw + b"\n")
        return offset

    for name, raw, fate, reason in corpus(run_id):
        # A good event between bad ones: bad input must not block or shift its neighbours.
        good = writer.append(run_id, "event", event(run_id, good_i)["event"], spool_dir=spool_dir, ts=ts(good_i))
        fates[good["seq"]] = (f"good {good_i}", "ship", "", ts(good_i))
        good_i += 1
        try:
            ended = json.loads(raw)["ts"]
        except Exception:
            ended = None
        fates[put(raw)] = (name, fate, reason, ended)
    # Oversized content (Ara refuses bodies over 2.5 MiB): shipped with a truncation marker.
    for name, details in (("3 MiB ASCII details", {"blob": "y" * (3 << 20)}),
                          ("2.3 MB of 3-byte UTF-8 details", "€" * 790_000),
                          ("1.2 MB of escaped control characters", "\x01" * 1_200_000)):
        ev = writer.append(run_id, "event", {"task": "big", "status": "ok", "host": "h0", "details": details},
                           spool_dir=spool_dir, ts=ts(good_i))
        fates[ev["seq"]] = (name, "ship", "", ts(good_i))
        good_i += 1
    big_file = writer.append(run_id, "file", {"path": "/srv/big.yml", "content": "- x: é\n" * 500_000},
                             spool_dir=spool_dir)
    # A line over the reader's 8 MiB limit, written past the writer (which would have cut it down).
    fates[put(b'{"v":1,"pad":"' + b"z" * (9 << 20) + b'"}')] = ("9 MiB line", "quarantine", "exceeds", None)
    last = writer.append(run_id, "event", event(run_id, good_i)["event"], spool_dir=spool_dir, ts=ts(good_i))
    fates[last["seq"]] = ("last good", "ship", "", ts(good_i))
    torn = b'{"v":1,"run":"bad-corpus","seq":'
    torn_at = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(torn)  # a writer killed mid-line: no newline, a torn tail

    [outcome] = await oneshot.flush(cfg, [run_id], timeout=120)
    assert outcome.status == "done", outcome.message

    q = quarantined(spool_dir, run_id)
    pb = ara.playbook_for(run_id)
    results = ara.results(pb["id"])
    by_ended: dict[datetime, list[dict[str, Any]]] = {}
    for r in results:
        by_ended.setdefault(datetime.fromisoformat(r["ended"].replace("Z", "+00:00")), []).append(r)
    assert all(len(v) == 1 for v in by_ended.values()), "a line was shipped twice"
    shipped_offsets = set()
    shipped_count = 0
    for offset, (name, fate, reason, ended) in sorted(fates.items()):
        try:
            in_ara = ended is not None and datetime.fromisoformat(ended) in by_ended
        except (TypeError, ValueError):
            in_ara = False
        in_q = offset in q
        shipped_count += in_ara
        assert in_ara != in_q, f"{name}: shipped={in_ara} quarantined={in_q}"
        if fate == "ship":
            assert in_ara, f"{name} was quarantined: {q.get(offset, ('',))[0]}"
            shipped_offsets.add(offset)
        elif fate == "quarantine":
            assert in_q, f"{name} was shipped"
            assert reason in q[offset][0], f"{name}: reason {q[offset][0]!r}"
        if in_q:
            # The quarantine keeps the line's bytes whole (the 9 MiB line too, in its own file).
            start = offset
            with open(path, "rb") as fh:
                fh.seek(start)
                assert fh.readline().rstrip(b"\n") == q[offset][1], name
    # Nothing in Ara that is not a spooled line: one result per shipped line.
    assert len(results) == shipped_count
    # Oversized contents arrived as markers, not refusals.
    big = [r for r in results
           if datetime.fromisoformat(r["ended"].replace("Z", "+00:00")) >= T0 + timedelta(seconds=1000)]
    markers = [ara.result(r["id"])["content"] for r in big]
    truncated = [c for c in markers if isinstance(c, dict) and c.get("ara_spool_truncated")]
    assert len(truncated) == 3, [type(c) for c in markers]

    # An oversized file is kept with its head and a note, not refused.
    assert big_file["seq"] not in q
    [f] = [f for f in ara.all("files", playbook=pb["id"]) if f["path"] == "/srv/big.yml"]
    assert "[ara-spool: truncated" in ara.get(f"files/{f['id']}")["content"]

    # The torn tail is neither shipped nor quarantined, and the checkpoint stops before it.
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.offset == torn_at and st.clean
    assert st.quarantined == len(q) and st.shipped == len(results) + 1  # + the file event
    # A writer ends the torn line: the next flush quarantines the fragment and ships the new event.
    again = writer.append(run_id, "event", event(run_id, 5000)["event"], spool_dir=spool_dir, ts=ts(5000))
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 1 and outcome.shipped == 1
    q2 = quarantined(spool_dir, run_id)
    assert q2[torn_at][1] == torn and "malformed JSON" in q2[torn_at][0]
    assert len(ara.results(pb["id"])) == len(results) + 1
    assert again["seq"] == torn_at + len(torn) + 1
    print(f"bad inputs: {len(fates) - len(shipped_offsets)} odd or bad lines + torn tail; "
          f"quarantined {len(q2)}, shipped {len(results) + 1}")


async def test_empty_spool_file_ships_nothing(cfg, ara, spool_dir, sentinel):
    (spool_dir / "empty-1.jsonl").write_bytes(b"")
    [outcome] = await oneshot.flush(cfg, ["empty-1"], timeout=30)
    assert outcome.status == "done" and outcome.shipped == 0 and outcome.quarantined == 0
    assert ara.playbooks_for("empty-1") == []
    assert load(RunPaths.of(spool_dir, "empty-1")).offset == 0


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "-rf", "..", ".hidden", "a..b", "/etc/passwd", "x\x00y"])
def test_unsafe_run_ids_are_refused_by_the_cli(cli_env, spool_dir, sentinel, run_id):
    for args in (["flush", f"--run={run_id}", "--timeout", "5"], ["emit", f"--run={run_id}", "--task", "t",
                                                                  "--host", "h", "--status", "ok"]):
        if "\x00" in run_id:
            with pytest.raises(ValueError):  # argv cannot even carry a NUL
                subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], env=cli_env)
            continue
        p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], env=cli_env, capture_output=True,
                           text=True)
        assert p.returncode == 2 and "unsafe run id" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert list(spool_dir.iterdir()) == []


async def test_unsafe_file_names_in_the_spool_dir_are_skipped(cfg, ara, spool_dir, sentinel):
    for name in ("-rf.jsonl", "a..b.jsonl", ".hidden.jsonl", "x y.jsonl"):
        (spool_dir / name).write_bytes(dumps(event("x", 1)) + b"\n")
    writer.append("fine-1", "event", event("fine-1", 1)["event"], spool_dir=spool_dir)
    assert list_runs(spool_dir) == ["fine-1"]
    outcomes = await oneshot.flush(cfg, None, timeout=30)
    assert [(o.run_id, o.status) for o in outcomes] == [("fine-1", "done")]
    assert sorted(p.name for p in spool_dir.iterdir()) == sorted(
        ["-rf.jsonl", "a..b.jsonl", ".hidden.jsonl", "x y.jsonl", "fine-1.jsonl", "fine-1.state", "fine-1.lock"])


@pytest.mark.parametrize("which", ["spool", "state", "rejected", "lock"])
async def test_symlinked_run_file_is_refused_and_other_runs_ship(cfg, ara, spool_dir, sentinel, which):
    """A run file replaced by a symlink (to a file outside, with valid events in it): that run stops
    with a clear error, nothing is followed, and the other runs still ship."""
    run_id = f"sym-{which}"
    writer.append(run_id, "event", {"task": "t", "status": "failed", "host": "h"}, spool_dir=spool_dir)
    with open(spool_dir / f"{run_id}.jsonl", "ab") as fh:
        fh.write(b"not json\n")  # so that the rejected file is needed
    paths = RunPaths.of(spool_dir, run_id)
    target = {"spool": paths.spool, "state": paths.state, "rejected": paths.rejected, "lock": paths.lock}[which]
    target.unlink(missing_ok=True)
    target.symlink_to(sentinel / "target.jsonl")
    other = f"sym-other-{which}"
    writer.append(other, "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    outcomes = {o.run_id: o for o in await oneshot.flush(cfg, [run_id, other], timeout=30)}
    assert outcomes[other].status == "done"
    assert len(ara.results(ara.playbook_for(other)["id"])) == 1
    bad = outcomes[run_id]
    assert bad.status == "error" and "symlink" in (bad.message or ""), bad
    assert target.is_symlink()
    # Nothing from the sentinel's events (run "sym") reached Ara.
    assert ara.playbooks_for("sym") == []
    if which == "spool":
        assert run_id not in list_runs(spool_dir)  # a scan of the dir never even lists it
    # Through the CLI: a clear one-line error, exit code 1, no traceback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARA_")}
    env.update(ARA_API_SERVER=cfg.server, ARA_SPOOL_DIR=str(spool_dir))
    p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id, "--timeout", "10"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "symlink" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_symlinked_spool_dir_is_refused_by_flush(cli_env, spool_dir, sentinel, tmp_path):
    link = tmp_path / "spool-link"
    link.symlink_to(sentinel)
    env = dict(cli_env, ARA_SPOOL_DIR=str(link))
    p = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--timeout", "5"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "symlink" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("change", ["mode 0666", "mode 0620", "other owner"])
async def test_unsafe_spool_file_permissions_are_refused(cfg, ara, spool_dir, sentinel, change):
    """A spool file others can write (or that another user owns) could carry forged events: the
    flusher refuses to ship it, with a message that says how to fix it; the writer refuses too."""
    run_id = "perm-" + change.replace(" ", "-")
    writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    path = spool_dir / f"{run_id}.jsonl"
    if change.startswith("mode"):
        os.chmod(path, int(change.split()[1], 8))
        hint = "writable by group or others"
    else:
        os.chown(path, 54321, 54321)
        hint = "owned by uid 54321"
    before = path.read_bytes()
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=30)
    assert outcome.status == "error" and hint in (outcome.message or ""), outcome
    assert ara.playbooks_for(run_id) == []
    with pytest.raises(UnsafeSpoolPath, match=hint):
        writer.append(run_id, "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    assert path.read_bytes() == before
    # Fixed by its owner: it ships.
    os.chown(path, os.geteuid(), os.getegid())
    os.chmod(path, 0o600)
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=30)
    assert outcome.status == "done" and len(ara.results(ara.playbook_for(run_id)["id"])) == 1


def test_world_readable_spool_file_is_still_read(spool_dir):
    """Readable by others is a leak, not a forgery risk: reading goes on (verify warns about it)."""
    writer.append("perm-read", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    os.chmod(spool_dir / "perm-read.jsonl", 0o644)
    assert [ln.event is not None for ln in read_lines(spool_dir / "perm-read.jsonl")] == [True]


async def test_a_line_over_8_mib_is_quarantined_whole_and_requeue_restores_it(cfg, ara, spool_dir):
    """The quarantine keeps an over-long line's whole bytes (in a file of its own): `requeue` puts
    it back (its content then cut down to a marker, as for any oversized event) and it ships once."""
    from ara_spool.spool.quarantine import records, requeue

    run_id = "big-line"
    writer.append(run_id, "event", event(run_id, 1)["event"], spool_dir=spool_dir, ts=ts(1))
    big = {"v": 1, "run": run_id, "seq": 0, "kind": "event", "ts": ts(2),
           "event": {"task": "big", "status": "ok", "host": "h1", "details": {"blob": "x" * (9 << 20)}}}
    raw = json.dumps(big).encode()
    path = spool_dir / f"{run_id}.jsonl"
    offset = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(raw + b"\n")
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.quarantined == 1, outcome
    [rec] = records(RunPaths.of(spool_dir, run_id))
    assert rec["offset"] == offset and rec["raw_bytes"] == len(raw)
    assert (spool_dir / rec["raw_file"]).read_bytes() == raw  # every byte, not a head
    result = requeue(RunPaths.of(spool_dir, run_id))
    assert (result.requeued, result.kept) == (1, 0)
    assert not (spool_dir / rec["raw_file"]).exists() and records(RunPaths.of(spool_dir, run_id)) == []
    [outcome] = await oneshot.flush(cfg, [run_id], timeout=60)
    assert outcome.status == "done" and outcome.shipped == 1, outcome
    results = ara.results(ara.playbook_for(run_id)["id"])
    assert len(results) == 2
    content = ara.result(results[-1]["id"])["content"]
    assert content["ara_spool_truncated"] and content["original_bytes"] > 9 << 20
    assert content["head"].startswith('{"blob"')
