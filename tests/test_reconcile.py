"""The exactly-once policy (flusher/reconcile.py) without a server."""

from __future__ import annotations

from ara_spool.flusher.mapping import Call, Lookup
from ara_spool.flusher.reconcile import Reconciler

PLAYBOOK = Call("POST", "/api/v1/playbooks", {}, creates=True, lookup=Lookup("/api/v1/playbooks", {}),
                lookup_first=True)
RESULT = Call("POST", "/api/v1/results", {}, creates=True, lookup=Lookup("/api/v1/results", {}, min_id=50))
HOST = Call("POST", "/api/v1/hosts", {})  # get-or-create in Ara: never looked up


def test_a_clean_checkpoint_looks_up_only_identity_and_lost_responses():
    rec = Reconciler("r", until=1000)
    assert rec.look_first(PLAYBOOK, False, 10)
    assert not rec.look_first(RESULT, False, 10) and not rec.look_first(HOST, True, 10)
    assert rec.look_first(RESULT, True, 10)  # a lost response: look before sending again


def test_after_a_crash_every_create_before_the_start_size_is_looked_up_even_after_a_miss():
    rec = Reconciler("r", after_crash=True, until=500, floor=20)
    assert rec.look_first(RESULT, False, 100)
    rec.missed(RESULT)  # e.g. a line the dead flusher quarantined: the next lines may still be in Ara
    assert rec.look_first(RESULT, False, 200)
    assert rec.lookup(RESULT, 200).min_id == 20  # above the floor, not above what this flusher created
    # Written after this flusher started: no earlier flusher can have shipped it.
    assert not rec.look_first(RESULT, False, 500) and rec.lookup(RESULT, 500).min_id == 50


def test_no_checkpoint_here_reconciles_the_whole_run_only_if_ara_has_its_playbook():
    rec = Reconciler("r", fresh=True, until=500)
    assert not rec.look_first(RESULT, False, 0)
    rec.found(PLAYBOOK)
    assert rec.look_first(RESULT, False, 0)
    new = Reconciler("r", fresh=True, until=500)
    new.missed(PLAYBOOK)  # a run new to this Ara
    assert not new.look_first(RESULT, False, 0)


def test_uncertain_while_any_create_may_be_stored_without_our_knowing():
    rec = Reconciler("r")
    rec.sending(RESULT)
    rec.sending(RESULT)  # two in flight (a window)
    assert rec.uncertain
    rec.answered(RESULT)
    assert rec.uncertain  # the other is still out
    rec.answered(RESULT, stored_unknown=True)  # its answer was lost
    assert rec.uncertain
    rec.resolved()  # found in Ara, or sent again and answered
    assert not rec.uncertain
    rec.sending(HOST)
    assert not rec.uncertain  # get-or-create: replaying it is harmless


# -- the read-back's comparison (flusher/readback.py), without a server -------------------------
def _read_back_case(rows: dict[str, list[int]]):
    """Host h's lines A, B, C (spool order) and Ara's rows for each: the comparison's answer."""
    from ara_spool.flusher.ids import AraIds
    from ara_spool.flusher.readback import Want, compare

    ids = AraIds(tasks={"t": 7}, hosts={"h": 3})
    starts = {"A": "2026-01-01T00:00:01+00:00", "B": "2026-01-01T00:00:02+00:00", "C": "2026-01-01T00:00:03+00:00"}
    wants = [Want(i * 10, "h", "t", starts[k]) for i, k in enumerate("ABC")]
    found = [{"id": rid, "task": 7, "host": 3, "started": starts[k].replace("+00:00", "Z")}
             for k, rids in rows.items() for rid in rids]
    return compare(wants, found, ids)


def test_the_read_back_keeps_the_rows_that_keep_spool_order_and_deletes_the_rest():
    # B's retry got 5 and its late original 7, after C's 6: keeping 5 keeps A < B < C.
    diff = _read_back_case({"A": [1], "B": [7, 5], "C": [6]})
    assert diff.doubles == [7] and diff.missing == [] and diff.out_of_order == 0
    # Not always the lowest id of a key: B's 2 is below A's only row, its 5 keeps the order.
    diff = _read_back_case({"A": [3], "B": [2, 5], "C": [6]})
    assert diff.doubles == [2] and diff.out_of_order == 0


def test_the_read_back_finds_lines_missing_and_says_when_order_cannot_be_kept():
    diff = _read_back_case({"A": [1], "C": [3]})
    assert diff.missing == [10] and diff.doubles == []
    diff = _read_back_case({"A": [5], "B": [4], "C": [6]})  # B's only row is below A's
    assert diff.out_of_order == 1 and diff.doubles == [] and diff.missing == []
    assert _read_back_case({"A": [1], "B": [2], "C": [3]}).doubles == []
