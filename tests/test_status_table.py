"""`ara-spool status`'s table: one line per run; a long LAST ERROR wraps at word boundaries under its
column and is shortened at a word (never mid-word) past a few lines; `--json` keeps it whole."""

from __future__ import annotations

from ara_spool.flusher.status import ERROR_MAX_LINES, render_table

ERROR = ("cannot connect to Ara at http://127.0.0.1:8000/api/v1/playbooks-with-a-long-path: Connect call "
         "failed ('127.0.0.1', 8000); retrying with exponential backoff, the spool is kept")


def row(run: str, error: str | None) -> dict:
    return {"run": run, "pending": 3, "shipped": 2, "quarantined": 0, "age_seconds": 70, "flushing": False,
            "final_status": None, "ara_url": "http://127.0.0.1:8000/playbooks/3.html", "last_error": error}


def test_long_error_wraps_at_word_boundaries_under_its_column():
    text = render_table([row("r1", ERROR), row("r2", None)], width=140)
    lines = text.splitlines()
    column = lines[0].index("LAST ERROR")
    assert lines[1].startswith("r1 ") and lines[-1].startswith("r2 ")
    first, *more = lines[1:-1]
    assert more, text  # it did wrap
    pieces = [first[column:]] + [m[column:] for m in more]
    assert all(not m[:column].strip() for m in more), text  # continuation lines: only the error column
    # every word kept, none cut: the breaks are at spaces (a URL longer than the column stays whole)
    assert " ".join(pieces) == ERROR, text
    assert all(len(line) <= 140 or len(line[column:].split()) == 1 for line in lines), text
    assert lines[-1].split()[-1] == "-"


def test_a_very_long_error_is_shortened_at_a_word():
    words = [f"word{i}" for i in range(200)]
    text = render_table([row("r1", " ".join(words))], width=120)
    lines = text.splitlines()[1:]
    column = text.splitlines()[0].index("LAST ERROR")
    assert len(lines) == ERROR_MAX_LINES
    shown = " ".join(line[column:] for line in lines).split()
    assert shown[-1] == "..." and shown[:-1] == words[:len(shown) - 1]  # whole words, then the marker


def test_narrow_terminal_still_gives_the_error_room():
    lines = render_table([row("r1", ERROR)], width=60).splitlines()
    column = lines[0].index("LAST ERROR")
    assert all(len(line) - column <= 40 or len(line[column:].split()) == 1 for line in lines[1:])
    shown = " ".join(line[column:] for line in lines[1:]).split()
    assert shown[-1] == "..." and shown[:-1] == ERROR.split()[:len(shown) - 1]


# -- what PENDING counts: the lines Ara has not acknowledged (against a real Ara) --------------------

async def test_pending_is_the_lines_not_in_ara_after_a_partial_flush_with_a_window(cfg, ara, proxy):
    """A window acknowledges lines above its low-water mark; PENDING must not count them (it said
    PENDING 47 + SHIPPED 21 for a 61-line spool, and the next flush shipped 40)."""
    import asyncio

    from ara_spool.flusher import oneshot, status
    from ara_spool.flusher.config import Config
    from ara_spool.spool.reader import read_lines

    from tests.faultproxy import Rule
    from tests.runs import spool_run

    run_id = "pending-1"
    spooled = spool_run(cfg.spool_dir, run_id, hosts=10, tasks=6)
    total = len(list(read_lines(cfg.spool_dir / f"{run_id}.jsonl")))
    proxy.rules = [Rule("delay", "POST", "/api/v1/results", every=7, seconds=0.3)]  # holds the mark back
    c = Config(server=proxy.url, spool_dir=cfg.spool_dir, timeout=5, max_backoff=0.3, window=16)
    c.check()
    for stop_at in (20, 45):  # two partial flushes, each stopped with lines done above the mark
        stop, shipped = asyncio.Event(), 0

        def count(_run: str, n: int, limit: int = stop_at, stop: asyncio.Event = stop) -> None:
            nonlocal shipped
            shipped += n
            if shipped >= limit - 10:
                stop.set()

        [part] = await oneshot.flush(c, [run_id], timeout=60, stop=stop, on_progress=count)
        assert part.status == "stopped", part.message
        [row] = status.collect(c, [run_id])
        in_ara = len(ara.results(ara.playbook_for(run_id)["id"]))
        # Through the API: every result not in Ara is pending; PENDING and SHIPPED add up to the spool.
        assert row["pending"] + row["shipped"] == total, (row, total)
        assert row["pending"] >= len(spooled) - in_ara > 0, (row, in_ara)
    proxy.rules = []
    [rest] = await oneshot.flush(c, [run_id], timeout=60)
    assert rest.status == "done" and rest.shipped == row["pending"], (rest, row)
    assert len(ara.results(ara.playbook_for(run_id)["id"])) == len(spooled)
    [row] = status.collect(c, [run_id])
    assert row["pending"] == 0 and row["shipped"] == total


def test_status_never_advises_chmod_600_in_a_group_shared_spool(tmp_path):
    """A flusher run without ARA_SPOOL_GROUP_SHARED refuses a 0660 spool file "(chmod 600 it ...)":
    in a group-shared spool that chmod is what stops the daemon; status says what fixes it."""
    import os

    from ara_spool.flusher import status
    from ara_spool.flusher.config import Config
    from ara_spool.spool.paths import RunPaths
    from ara_spool.spool.state import RunState, save

    from tests.runs import emit_events

    spool = tmp_path / "shared"
    spool.mkdir()
    os.chmod(spool, 0o2770)
    emit_events(spool, "g-1", 1)
    os.chmod(spool / "g-1.jsonl", 0o660)
    refused = (f"{spool}/g-1.jsonl is writable by group or others (mode 0660), so its events could be forged "
               "(chmod 600 it if its content is trusted); refusing it")
    save(RunPaths.of(spool, "g-1"), RunState("g-1", dest="http://a/api/v1", last_error=refused))
    [row] = status.collect(Config(spool_dir=spool))
    assert "chmod 600" not in row["last_error"] and "ARA_SPOOL_GROUP_SHARED=true" in row["last_error"], row
    assert row["pending"] is None and render_table([row]).splitlines()[1].split()[:2] == ["g-1", "?"]
    os.chmod(spool, 0o700)  # a private spool: the advice stands
    [row] = status.collect(Config(spool_dir=spool))
    assert row["last_error"] == refused
