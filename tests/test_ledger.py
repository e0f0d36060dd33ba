"""The window's bookkeeping (flusher/ledger.py) as properties: lines handed out in spool order and
answered in any order, sometimes given up (a restart)."""

from __future__ import annotations

from ara_spool.flusher.ledger import Ledger
from hypothesis import given, settings
from hypothesis import strategies as st

# A run of steps: answer the i-th open line (modulo), hand out a new line, or rewind.
steps = st.lists(st.one_of(st.tuples(st.just("open"), st.integers(0, 50)),
                           st.tuples(st.just("done"), st.integers(0, 1000)),
                           st.tuples(st.just("rewind"), st.just(0))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_ledger_agrees_with_a_model_of_the_window(plan):
    """Against a plain model: the low-water mark is the end of the longest answered prefix, the
    lines answered above it are kept (also across a rewind), the floor is the lowest unanswered
    create's."""
    ledger = Ledger()
    model: list[list] = []  # [offset, end, done, sent_above] for each line in flight, in order
    low, skip, highest, next_offset = 0, set(), 0, 0
    for op, n in plan:
        if op == "open":
            offset = next_offset
            next_offset += 10
            if ledger.skipped(offset):
                assert offset in skip
                skip.discard(offset)
                entry = ledger.open(offset, offset + 10)
                ledger.done(entry)
                model.append([offset, offset + 10, True, None, entry])
            else:
                assert offset not in skip
                entry = ledger.open(offset, offset + 10)
                entry.sent_above = highest
                highest += n
                model.append([offset, offset + 10, False, entry.sent_above, entry])
        elif op == "done":
            undone = [m for m in model if not m[2]]
            if not undone:
                continue
            m = undone[n % len(undone)]
            m[2] = True
            ledger.done(m[4])
        else:
            reach, floor = ledger.rewind(highest)
            assert reach == (model[-1][1] if model else low)
            assert floor == min([m[3] for m in model if not m[2]], default=highest)
            skip |= {m[0] for m in model if m[2]}
            model.clear()
            next_offset = low  # read again from the low-water mark
        while model and model[0][2]:
            low = model.pop(0)[1]
        assert ledger.low_water == low
        assert ledger.done_above() == sorted({m[0] for m in model if m[2]} | skip)
        assert all(o >= low for o in ledger.done_above())  # o == low: the next line, answered already
        assert ledger.floor(highest) == min([m[3] for m in model if not m[2]], default=highest)


def test_answered_out_of_order():
    ledger = Ledger(100, [250])
    a, b, c = ledger.open(100, 150), ledger.open(150, 200), ledger.open(200, 250)
    a.sent_above, b.sent_above, c.sent_above = 7, 9, 12
    assert ledger.done(b) == 0 and ledger.low_water == 100
    assert ledger.done_above() == [150, 250] and ledger.floor(20) == 7
    assert ledger.done(a) == 2 and ledger.low_water == 200 and ledger.floor(20) == 12
    assert ledger.skipped(250) and not ledger.skipped(250)
    assert ledger.rewind(20) == (250, 12) and ledger.reach == 200 and ledger.done_above() == []
    assert ledger.done(c) == 0  # an entry given up counts for nothing
