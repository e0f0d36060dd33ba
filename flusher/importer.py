"""`ara-spool import runner`: ansible-runner artifact dirs into the spool, exactly once, then shipped.

Each `artifacts/<ident>` is one run, run id <ident>. Its job events are translated
(handlers/runner_events.py) and appended to the run's spool; the existing flusher ships it.

Exactly once across crashes: every spool line the import writes carries `import_source`
[counter, n] (the n-th spool event of job event `counter`; extra fields are kept and ignored by the
flusher), and the spool's last whole line is the cursor. An import re-translates the run from its
first event and writes only what lies past the cursor, under the spool file's lock (one importer
at a time). A SIGKILL mid-write leaves at most a torn last line: it is cut before anything is
appended (the flusher never reads a line without its newline), so nothing is doubled or lost.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ara_spool.handlers import parity, runner_events
from ara_spool.spool import schema, writer
from ara_spool.spool.paths import RunPaths, check_run_id, ensure_spool_dir

# <counter>-<uuid>.json, the uuid of a task started again (serial batches, strategy free) with a
# _<n> suffix; ansible-runner writes each first as <uuid>-partial.json, whose uuid may start with
# digits: never a counter.
EVENT_FILE = re.compile(r"^(\d+)-[0-9A-Fa-f-]+(?:_\d+)?\.json$")
NAVIGATOR_FILE = re.compile(r"^.+-artifact-.+\.json$")
MAX_FILE_BYTES = 1024 * 1024  # as the callback: larger task files are recorded as a note
BATCH_BYTES = 1024 * 1024  # lines written per write(2)
TAIL_CHUNK = 64 * 1024


class NotImportable(Exception):
    """A path or a spool the import cannot use (the message says why)."""


# -- finding runs ----------------------------------------------------------------------------
def is_run(path: Path) -> bool:
    """An artifact dir (holding job_events/) or an ansible-navigator playbook artifact file."""
    if path.is_file():
        return bool(NAVIGATOR_FILE.match(path.name))
    return (path / "job_events").is_dir()


def runs_under(root: Path) -> list[Path]:
    """The artifact dirs a private data dir (its artifacts/*) or an artifacts dir (its children)
    holds now, by name."""
    base = root / "artifacts" if (root / "artifacts").is_dir() else root
    try:
        return sorted(p for p in base.iterdir() if (p / "job_events").is_dir())
    except OSError:
        return []


def artifact_dirs(paths: list[Path], watch: bool = False) -> list[Path]:
    """The runs named by paths: an artifact dir itself, a private data dir (its artifacts/*), an
    artifacts dir (its children), or an ansible-navigator playbook artifact file
    (`<playbook>-artifact-<ts>.json`). watch (--follow): a directory with no run yet is no error,
    its runs are those that will appear."""
    found: list[Path] = []
    for path in paths:
        if is_run(path):
            found.append(path)
            continue
        runs = runs_under(path) if path.is_dir() else []
        if not runs and not (watch and path.is_dir()):
            raise NotImportable(f"{path}: no ansible-runner run here (an artifacts/<ident> dir with job_events/, "
                               "or a private data dir holding such)")
        found.extend(runs)
    return found


def watched_dirs(paths: list[Path]) -> list[Path]:
    """The paths --follow watches for new runs: those that are not a run themselves."""
    return [p for p in paths if p.is_dir() and not is_run(p)]


def run_status(artifact_dir: Path) -> str | None:
    try:
        return (artifact_dir / "status").read_text().strip() or None
    except OSError:
        return None


def event_files(artifact_dir: Path, start: int = 1) -> dict[int, Path]:
    """counter -> file, for the whole job event files from counter start on (temp names skipped)."""
    out = {}
    try:
        entries = os.scandir(artifact_dir / "job_events")
    except FileNotFoundError:
        return {}
    with entries:
        for entry in entries:
            m = EVENT_FILE.match(entry.name)
            if m and not entry.name.endswith("-partial.json") and int(m.group(1)) >= start:
                out[int(m.group(1))] = Path(entry.path)
    return out


# -- what the events point at (the I/O the translator is handed) ----------------------------
@dataclass
class RunFiles:
    artifact_dir: Path
    ignored_files: parity.FilePatterns

    @property
    def private_data_dir(self) -> Path:
        return self.artifact_dir.parent.parent

    def command(self) -> dict[str, Any]:
        try:
            data = json.loads((self.artifact_dir / "command").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def playbook_path(self, first_event: dict[str, Any] | None) -> str:
        """The playbook's absolute path: the command's playbook argument in the command's cwd."""
        cmd = self.command()
        args = [str(a) for a in cmd.get("command") or []]
        name = next((a for a in reversed(args) if a.endswith((".yml", ".yaml"))), None)
        if name is None and first_event:
            name = (first_event.get("event_data") or {}).get("playbook")
        if not name:
            return f"ansible-runner:{self.artifact_dir.name}"
        cwd = Path(cmd.get("cwd") or self.private_data_dir / "project")
        return os.path.normpath(cwd / name)

    def local(self, path: str) -> Path | None:
        """Where a path the run saw is here: itself, or (a run in a container, AWX: /runner/project/x)
        the same path under this private data dir's project/."""
        if os.path.isfile(path):
            return Path(path)
        parts = Path(path).parts
        if "project" in parts:
            rest = parts[len(parts) - parts[::-1].index("project"):]
            candidate = self.private_data_dir / "project" / Path(*rest) if rest else None
            if candidate is not None and candidate.is_file():
                return candidate
        return None

    def read(self, path: str) -> str:
        if self.ignored_files.match(path):
            return parity.IGNORED_FILE
        local = self.local(path)
        if local is None:
            return runner_events.missing_file_note(path)
        try:
            with open(local, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            return f"# {path}: not readable by ara-spool ({exc.strerror})\n"
        if len(data) > MAX_FILE_BYTES:
            return f"# {path}: larger than {MAX_FILE_BYTES} bytes, not recorded by ara-spool\n"
        # An empty file still needs a content: the spool schema refuses a file event without one.
        return data.decode("utf-8", "replace") or "\n"

    def facts(self, host: str) -> dict[str, Any] | None:
        """The host's facts from fact_cache/ (jsonfile; ansible-core 2.19 names it s<n>_<host> and
        wraps the facts in a __payload__ string)."""
        cache = self.artifact_dir / "fact_cache"
        if not cache.is_dir():
            return None
        names = [host] + sorted(p.name for p in cache.iterdir() if re.fullmatch(rf"s\d+_{re.escape(host)}", p.name))
        for name in names:
            try:
                data = json.loads((cache / name).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("__payload__"), str):
                try:
                    data = json.loads(data["__payload__"])
                except ValueError:
                    continue
            if isinstance(data, dict):
                return data
        return None


# -- the spool side: cursor, torn tail, batched appends -------------------------------------
def _cursor(fd: int, path: Path) -> tuple[int, tuple[int, int]]:
    """(size after cutting a torn tail, the last line's import_source); (0, (0, -1)) when empty."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, (0, -1)
    # Find the last newline: everything after it is a torn line of a killed import.
    end, chunk = size, b""
    while end > 0:
        start = max(0, end - TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start) + chunk
        end = start
        if chunk.count(b"\n") >= 2 or end == 0:
            break
    last_nl = chunk.rfind(b"\n")
    if last_nl < 0:
        os.ftruncate(fd, 0)  # a single torn line and nothing else
        return 0, (0, -1)
    whole = end + last_nl + 1
    if whole < size:
        os.ftruncate(fd, whole)
    prev_nl = chunk.rfind(b"\n", 0, last_nl)
    try:
        event = json.loads(chunk[prev_nl + 1:last_nl])
        source = event["import_source"]
        return whole, (int(source[0]), int(source[1]))
    except (ValueError, KeyError, TypeError, IndexError):
        raise NotImportable(f"{path} exists and was not written by `ara-spool import` (or is damaged): "
                           "refusing to append to it") from None


@dataclass
class SpoolAppender:
    """Appends a run's translated events past the cursor, holding the spool's lock meanwhile."""

    run_id: str
    path: Path
    fd: int = -1
    offset: int = 0
    cursor: tuple[int, int] = (0, -1)
    buf: list[bytes] = field(default_factory=list)
    buffered: int = 0
    written: int = 0

    def __enter__(self) -> SpoolAppender:
        self.fd = writer.open_locked(self.path)  # the writer's lock: one writer at a time
        try:
            self.offset, self.cursor = _cursor(self.fd, self.path)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def add(self, item: runner_events.Spooled) -> None:
        if item.source <= self.cursor:
            return  # written by an earlier import
        event = schema.make_event(self.run_id, item.kind, item.body, item.ts)
        event["seq"] = self.offset + self.buffered
        event["import_source"] = list(item.source)
        line = writer.encode(event)
        if len(line) > writer.MAX_LINE_BYTES:
            body = dict(item.body)
            body["content"] = writer.truncate_content(body.get("content"), writer.MAX_LINE_BYTES // 2)
            event[schema.REQUIRED[item.kind][0]] = body
            line = writer.encode(event)
        self.buf.append(line)
        self.buffered += len(line)
        self.written += 1
        self.cursor = item.source
        if self.buffered >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            writer.write_all(self.fd, b"".join(self.buf))
            self.offset += self.buffered
            self.buf, self.buffered = [], 0

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            os.close(self.fd)


def _client_version() -> str:
    try:
        from importlib.metadata import version

        return f"ara-spool {version('ara-spool')} import"
    except Exception:  # noqa: BLE001 - a source checkout
        return "ara-spool import"


# -- one run ----------------------------------------------------------------------------------
@dataclass
class RunImport:
    """One artifact dir, imported pass by pass (a run still being written is imported again)."""

    artifact_dir: Path
    spool_dir: Path
    ignored_facts: tuple[str, ...] = ("ansible_env",)
    ignored_files: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    translator: runner_events.Translator | None = None
    next_counter: int = 1
    done: bool = False
    stalled: bool = False  # given up by --follow --stall: no new event for that long, not ended

    @property
    def navigator(self) -> bool:
        return self.artifact_dir.is_file()

    @property
    def run_id(self) -> str:
        name = self.artifact_dir.name
        return check_run_id(name.removesuffix(".json") if self.navigator else name)

    def _translator(self, first: dict[str, Any] | None) -> runner_events.Translator:
        files = RunFiles(self.artifact_dir, parity.FilePatterns(list(self.ignored_files)))
        info = runner_events.RunInfo(run_id=self.run_id, playbook_path=files.playbook_path(first),
                                     ignored_facts=self.ignored_facts, labels=self.labels,
                                     source_label=runner_events.NAVIGATOR_LABEL if self.navigator
                                     else runner_events.SOURCE_LABEL,
                                     client_version=_client_version())
        return runner_events.Translator(info, files.read, files.facts)

    def _new_events(self, ended: bool) -> Iterator[dict[str, Any]]:
        """Job events from next_counter on: contiguous ones while the run goes on; all once it ended."""
        if self.navigator:  # written once, at the run's end
            try:
                doc = json.loads(self.artifact_dir.read_text())
            except (OSError, ValueError) as exc:
                raise NotImportable(f"{self.artifact_dir}: not an ansible-navigator playbook artifact "
                                    f"({exc})") from None
            events = runner_events.navigator_job_events(doc if isinstance(doc, dict) else {})
            for event in events[self.next_counter - 1:]:
                self.next_counter = event["counter"] + 1
                yield event
            return
        files = event_files(self.artifact_dir, self.next_counter)
        for counter in sorted(files):
            if counter != self.next_counter and not ended:
                return  # a gap: the event before is not written yet
            try:
                event = json.loads(files[counter].read_text())
            except (OSError, ValueError):
                if not ended:
                    return
                continue  # unreadable once the run is over: skipped, the next ones still count
            self.next_counter = counter + 1
            yield event

    def step(self) -> int:
        """Import what is new; returns the spool events appended. Sets done once the run ended."""
        # Read before listing the events: those listed after it said "ended" are all of them.
        ended = self.navigator or run_status(self.artifact_dir) in runner_events.ENDED_STATUSES
        ensure_spool_dir(self.spool_dir)
        paths = RunPaths.of(self.spool_dir, self.run_id)
        with SpoolAppender(self.run_id, paths.spool) as out:
            for event in self._new_events(ended):
                if self.translator is None:
                    self.translator = self._translator(event)
                for item in self.translator.feed(event):
                    out.add(item)
            if ended:
                if self.translator is None:
                    self.translator = self._translator(None)
                for item in self.translator.finish():
                    out.add(item)
                self.done = True
            return out.written


# -- the runs to import, with the callback's masking switches ----------------------------------
def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = os.environ.get(name)
    if value is None:
        return default
    return tuple(x.strip() for x in value.split(",") if x.strip())


def run_import(path: Path, spool_dir: Path) -> RunImport:
    """A RunImport with ara_default's switches: ARA_IGNORED_FACTS, ARA_IGNORED_FILES, ARA_DEFAULT_LABELS."""
    return RunImport(path, spool_dir, ignored_facts=_env_list("ARA_IGNORED_FACTS", ("ansible_env",)),
                     ignored_files=_env_list("ARA_IGNORED_FILES", ()), labels=_env_list("ARA_DEFAULT_LABELS", ()))


def imports_for(paths: list[Path], spool_dir: Path, watch: bool = False) -> list[RunImport]:
    """One RunImport per run under paths (now: the ones that appear later are --follow's)."""
    return [run_import(d, spool_dir) for d in artifact_dirs(paths, watch)]
