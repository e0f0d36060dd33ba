"""Progress of a one-shot flush: a tqdm bar on a terminal, nothing when stderr is not a TTY."""

from __future__ import annotations

import sys

from ara_spool.flusher.config import Config
from ara_spool.spool import progress
from ara_spool.spool.paths import RunPaths, list_runs


def pending_lines(cfg: Config, runs: list[str] | None) -> int:
    return sum(progress.read(RunPaths.of(cfg.spool_dir, run_id), cfg.destination).pending_lines
               for run_id in runs or list_runs(cfg.spool_dir))


class Progress:
    """events shipped / pending, rate and ETA, from tqdm."""

    def __init__(self, cfg: Config, runs: list[str] | None, *, enabled: bool = True) -> None:
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=pending_lines(cfg, runs), unit="ev", desc="shipping to Ara",
                             file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(self, run_id: str, n: int) -> None:
        if self._bar is not None:
            if self._bar.n + n > (self._bar.total or 0):
                self._bar.total = self._bar.n + n  # the spool grew while we shipped
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
