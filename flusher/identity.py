"""Whether the Ara ids a run holds are still this run's at this Ara (a reset or replaced database
reuses ids: a write with a stale id lands in whatever row now has it).

The run's playbook must carry the label `run_id:<run id>` exactly (Ara's label filter ignores case;
two run ids differing in case are two runs), and every play, task, host and file id the checkpoint
caches must be a row of that playbook. `check()` answers with the reason they are not, or None.
`run_playbooks()` lists the playbooks labelled exactly with the run's id (several: two controllers
shipped one run at once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from ara_spool.flusher.client import StaleIdError
from ara_spool.flusher.ids import AraIds
from ara_spool.flusher.mapping import run_label

API = "/api/v1"
PAGE = 1000  # rows per GET when listing (a few requests per 1,000 results)


class Requester(Protocol):
    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None) -> dict[str, Any]: ...


def label_names(playbook: dict[str, Any]) -> list[str]:
    return [str(x.get("name") if isinstance(x, dict) else x) for x in playbook.get("labels") or []]


def labelled(playbook: dict[str, Any], run_id: str) -> bool:
    """The playbook carries this run's label, compared exactly (not as Ara's filter does)."""
    return run_label(run_id) in label_names(playbook)


async def rows(client: Requester, kind: str, **params: Any) -> AsyncIterator[dict[str, Any]]:
    """Every row of a list endpoint, PAGE at a time, in id order."""
    offset = 0
    while True:
        data = await client.request("GET", f"{API}/{kind}",
                                    params={**{k: str(v) for k, v in params.items()}, "order": "id",
                                            "limit": str(PAGE), "offset": str(offset)})
        page = data.get("results") or []
        for row in page:
            yield row
        offset += len(page)
        if not page or not data.get("next"):
            return


async def run_playbooks(client: Requester, run_id: str) -> list[dict[str, Any]]:
    """The playbooks labelled exactly with this run's id, lowest id first."""
    return [pb async for pb in rows(client, "playbooks", label=run_label(run_id)) if labelled(pb, run_id)]


async def check(client: Requester, run_id: str, ids: AraIds, *, parents: bool = True) -> str | None:
    """None when every id the run caches is this run's at this Ara; else why not. `parents`: also
    each cached play, task, host and file id (after a fault); without, the playbook's label only."""
    pb = ids.playbook
    if pb is None:
        return None
    try:
        playbook = await client.request("GET", f"{API}/playbooks/{pb}")
    except StaleIdError:
        return f"playbook {pb} is gone"
    if not labelled(playbook, run_id):
        return f"playbook {pb} does not carry the label {run_label(run_id)!r}"
    if not parents:
        return None
    for kind, cached in (("plays", ids.plays), ("tasks", ids.tasks), ("hosts", ids.hosts),
                         ("files", ids.files)):
        if not cached:
            continue
        held = {row["id"] async for row in rows(client, kind, playbook=pb)}
        stray = set(cached.values()) - held
        if stray:
            return f"{len(stray)} of the run's {kind} are not rows of its playbook {pb}"
    return None
