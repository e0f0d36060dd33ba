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
