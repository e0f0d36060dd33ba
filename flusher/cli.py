"""The `ara-spool` command: emit, flush, status, env, verify, prune."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from ara_spool.flusher.config import Config
from ara_spool.spool import events, schema, settings, writer
from ara_spool.spool.paths import (
    DISK_FULL_BYTES,
    RunPaths,
    UnsafeRunId,
    UnsafeSpoolPath,
    check_run_id,
    disk_free,
    exists_in_dir,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_QUARANTINED = 5
EXIT_BUSY = 6
EXIT_SERVER = 7  # the URL is not a working Ara (wrong server, a login page, the run's rows gone)

# What each exit code means, for `--help` (the README's table of flush's exit codes says the same).
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_ERROR: "unexpected error (a corrupt state file, an unreadable spool, a failed write)",
    EXIT_USAGE: "bad usage or configuration (the message names the option or variable)",
    EXIT_UNREACHABLE: "Ara unreachable (down, hanging: no progress for --timeout), or stopped by a signal with a "
                      "request cut short: the spool is kept",
    EXIT_AUTH: "auth refused (401/403) or TLS verification failed: the spool is kept",
    EXIT_QUARANTINED: "some events were quarantined (see <run>.rejected.jsonl)",
    EXIT_BUSY: "another flusher holds the run and had not passed its end in time",
    EXIT_SERVER: "the URL is not a working Ara (not Ara's API, 404/405, a login redirect): the spool is kept",
}
# Per command, for its --help: its exit codes, with a meaning of its own or None for EXIT_MEANINGS'
# (a command missing here gets 0, 1 and 2) ...
COMMAND_EXITS: dict[str, dict[int, str | None]] = {
    "emit": {EXIT_OK: "the event is in the spool",
             EXIT_ERROR: "the spool could not be written (or is full under ARA_SPOOL_FULL_POLICY=refuse)",
             EXIT_USAGE: None},
    "flush": {EXIT_OK: "everything is in Ara, or stopped by SIGTERM/SIGINT with a clean checkpoint", EXIT_ERROR: None,
              EXIT_USAGE: None, EXIT_UNREACHABLE: None, EXIT_AUTH: None, EXIT_QUARANTINED: None, EXIT_BUSY: None,
              EXIT_SERVER: None},
    "requeue": {EXIT_OK: "quarantined events are back in line (or there were none)", EXIT_ERROR: None,
                EXIT_USAGE: None, EXIT_BUSY: "a flusher is shipping the run: try again"},
    "import": {EXIT_OK: "imported and everything is in Ara, or stopped by SIGTERM/SIGINT with a clean checkpoint "
                        "(the rest stays in the spool)", EXIT_ERROR: None, EXIT_USAGE: None,
               EXIT_UNREACHABLE: None, EXIT_AUTH: None, EXIT_QUARANTINED: None, EXIT_BUSY: None, EXIT_SERVER: None},
    "prune": {EXIT_OK: "done", EXIT_ERROR: "a run could not be retired", EXIT_USAGE: None},
    "status": {EXIT_OK: "the table (or JSON) was printed", EXIT_ERROR: None, EXIT_USAGE: None},
    "env": {EXIT_OK: "the export lines were printed"},
    "verify": {EXIT_OK: "every run checked is sound", EXIT_ERROR: None, EXIT_USAGE: None,
               EXIT_QUARANTINED: "problems found (each is printed; --repair fixes what it can)"},
}
# ... and the environment variables it reads besides those its options imply (_options_env).
COMMAND_ENV: dict[str, list[str]] = {
    "emit": ["ARA_RUN_ID", "ARA_SPOOL_FSYNC", "ARA_SPOOL_MAX_BYTES", "ARA_SPOOL_FULL_POLICY"],
    "flush": ["ARA_SPOOL_CONCURRENCY", "ARA_SPOOL_WINDOW", "ARA_SPOOL_MAX_INFLIGHT", "ARA_SPOOL_CHECKPOINT_EVERY",
              "ARA_SPOOL_MAX_BACKOFF", "ARA_SPOOL_RETENTION_DAYS",
              "ARA_SPOOL_RETENTION_ACTION", "ARA_SPOOL_MAX_BYTES", "ARA_SPOOL_FULL_POLICY",
              "NOTIFY_SOCKET, WATCHDOG_USEC (systemd, with --follow)"],
    "import": ["ARA_IGNORED_FACTS (default ansible_env), ARA_IGNORED_FILES, ARA_DEFAULT_LABELS (ara_default's names)",
               "ARA_SPOOL_WINDOW"],
    "prune": ["ARA_SPOOL_RETENTION_DAYS", "ARA_SPOOL_RETENTION_ACTION"],
}
SPOOL_ENV = ["ARA_SPOOL_DIR (else $XDG_STATE_HOME/ara-spool or ~/.local/state/ara-spool)", "ARA_SPOOL_GROUP_SHARED"]
API_ENV = ["ARA_API_SERVER", "ARA_API_USERNAME, ARA_API_PASSWORD, ARA_API_PASSWORD_FILE (HTTP Basic)",
           "ARA_API_TOKEN, ARA_API_TOKEN_FILE (Bearer, for a proxy in front of Ara)",
           "CREDENTIALS_DIRECTORY (systemd: files ara-api-password, ara-api-token)",
           "ARA_API_INSECURE", "ARA_API_CA_BUNDLE", "ARA_API_TIMEOUT"]
# Metavars by option dest, so `--help` reads like the README (`--run ID`, not `--run RUN`).
METAVARS = {"stall": "SECONDS", "run": "ID", "task": "NAME", "host": "HOST", "duration": "SECONDS", "details": "JSON",
            "timeout": "SECONDS", "concurrency": "N", "window": "N", "days": "DAYS", "poll": "SECONDS",
            "max_backoff": "SECONDS",
            "retention_days": "DAYS", "spool_dir": "DIR", "server": "URL", "ca_bundle": "FILE",
            "api_timeout": "SECONDS"}
LOG_ENV = ["ARA_SPOOL_LOG_LEVEL (else WARNING; -v INFO, -vv DEBUG)"]

log = logging.getLogger("ara_spool")


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"{_LEVEL_PREFIX['ERROR'] if _journal() else ''}ara-spool: {message}", file=sys.stderr)
    return code


# syslog priorities: under systemd, journald reads a line's `<N>` prefix as its level (`journalctl -p err`).
_LEVEL_PREFIX = {"DEBUG": "<7>", "INFO": "<6>", "WARNING": "<4>", "ERROR": "<3>", "CRITICAL": "<2>"}


def _say(level: str, message: str) -> None:
    """One line for the user on stderr; under systemd with its level for the journal."""
    print(f"{_LEVEL_PREFIX[level] if _journal() else ''}ara-spool: {message}", file=sys.stderr)


def _journal() -> bool:
    """Our stderr is the journal: systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it gave
    a unit. A child writing elsewhere (the in-play flusher's log file) inherits the variable, not the
    stream: it keeps timestamps and plain lines."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class _JournalFormatter(logging.Formatter):
    """Each line with its syslog level prefix, for journald; no timestamp (journald stamps it)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = _LEVEL_PREFIX.get(record.levelname, "<6>")
        return "\n".join(prefix + line for line in text.splitlines())


def _config(args: argparse.Namespace) -> Config:
    cfg = Config.from_env()
    if getattr(args, "server", None):
        cfg.server = args.server
    if getattr(args, "spool_dir", None):
        cfg.spool_dir = Path(args.spool_dir)
    if getattr(args, "insecure", False):
        cfg.insecure = True
    if getattr(args, "ca_bundle", None):
        cfg.ca_bundle = args.ca_bundle
    if getattr(args, "api_timeout", None):
        cfg.timeout = args.api_timeout
    if getattr(args, "concurrency", None):
        cfg.concurrency = args.concurrency
    if getattr(args, "window", None):
        cfg.window = args.window
    cfg.check()
    return cfg


# -- emit -------------------------------------------------------------------------------------
def cmd_emit(args: argparse.Namespace) -> int:
    run_id = args.run or settings.env_str("ARA_RUN_ID")
    if not run_id:
        return _fail("emit needs --run ID (or ARA_RUN_ID)", EXIT_USAGE)
    cfg_dir = Path(args.spool_dir) if args.spool_dir else None
    given = [n for n in ("task", "host", "status") if getattr(args, n) is not None]
    if args.end and not given:  # only the run's end: an emit-only run is not left running in Ara
        writer.append(run_id, "run_end", {"status": args.end}, spool_dir=cfg_dir)
        return EXIT_OK
    if len(given) < 3:
        return _fail("emit needs --task, --host and --status (or only --end)", EXIT_USAGE)
    details: Any = {}
    if args.details is not None:
        try:
            details = json.loads(args.details)
        except ValueError as exc:
            return _fail(f"--details is not valid JSON: {exc}", EXIT_USAGE)
    try:
        body = events.event_body(args.task, args.status, args.host, details, duration=args.duration,
                                 changed=True if args.changed else None)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    writer.append(run_id, "event", body, spool_dir=cfg_dir)
    if args.end:
        writer.append(run_id, "run_end", {"status": args.end}, spool_dir=cfg_dir)
    return EXIT_OK


# -- import ----------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from ara_spool.flusher import importer
    from ara_spool.flusher.import_session import ImportSession

    cfg = _config(args)

    def report(imp: Any, written: int) -> None:
        if not args.quiet and (written or imp.done):
            state = "ended" if imp.done else "still running"
            if imp.stalled:
                state = f"no new event for {args.stall:g}s and not ended: left running, import it again later"
            print(f"ara-spool: run {imp.run_id}: {written} new event(s) spooled ({state})", file=sys.stderr)

    try:
        session = ImportSession(cfg, [Path(p) for p in args.paths], follow=args.follow, ship=not args.no_ship,
                                poll=args.poll, timeout=args.timeout or None, stall=args.stall, report=report,
                                warn=lambda message: _say("WARNING", message))
    except (importer.NotImportable, UnsafeRunId) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if session.watching and not args.quiet:
        print("ara-spool: following the runs there and the new ones as they appear, until SIGTERM/SIGINT",
              file=sys.stderr)
    try:
        outcomes = session.run()
    except importer.NotImportable as exc:
        return _fail(str(exc))
    code = _exit_code(outcomes)
    if code == EXIT_OK and not _stopped_cleanly(cfg, outcomes):
        code = EXIT_UNREACHABLE  # stopped with a request cut short: the next import or flush reconciles it
    for o in outcomes:
        if o.status not in ("done", "stopped") or o.quarantined:
            print(f"ara-spool: run {o.run_id}: {o.message or o.status}", file=sys.stderr)
    if session.stopper.stopped and not args.quiet:
        left = [i.run_id for i in session.imports if not i.done]
        print(f"ara-spool: stopped by signal {session.stopper.signal}: what is spooled and not shipped stays in the "
              f"spool; {len(left)} run(s) not ended, import again to go on", file=sys.stderr)
    return code


# -- flush ------------------------------------------------------------------------------------
def _exit_code(outcomes: list[Any]) -> int:
    statuses = {o.status for o in outcomes}
    for status, code in (("auth", EXIT_AUTH), ("server", EXIT_SERVER), ("error", EXIT_ERROR),
                         ("unreachable", EXIT_UNREACHABLE), ("busy", EXIT_BUSY)):
        if status in statuses:
            return code
    if any(o.quarantined for o in outcomes):
        return EXIT_QUARANTINED
    return EXIT_OK


def _known_runs(cfg: Config, runs: list[str] | None) -> None:
    """--run names a run this spool dir has: an unknown id is a mistake, not "nothing to do"."""
    for run_id in runs or []:
        check_run_id(run_id)
        if not exists_in_dir(RunPaths.of(cfg.spool_dir, run_id).spool):  # a symlinked spool dir is refused
            raise UnknownRun(f"no run {run_id!r} in {cfg.spool_dir} (see `ara-spool status`; "
                             "--spool-dir or ARA_SPOOL_DIR choose another spool)")


class UnknownRun(Exception):
    pass


def _retry_hint(cfg: Config, run_ids: list[str]) -> str:
    runs = " ".join(f"--run {r}" for r in run_ids)
    return f"ara-spool flush {runs} --server {cfg.display_server} --spool-dir {cfg.spool_dir}"


def cmd_flush(args: argparse.Namespace) -> int:
    from ara_spool.flusher import oneshot
    from ara_spool.flusher.progress_bar import Progress

    cfg = _config(args)
    if args.follow:
        return _daemon(cfg, args)
    _known_runs(cfg, args.run)
    timeout = args.timeout if args.timeout is None or args.timeout > 0 else None
    if args.until_end:
        from ara_spool.flusher.follow import DETACHED_TIMEOUT, follow

        if not args.run or len(args.run) != 1:
            return _fail("--until-end follows one run: give exactly one --run", EXIT_USAGE)
        outcome = asyncio.run(follow(cfg, args.run[0], parent_pid=args.parent,
                                     timeout=DETACHED_TIMEOUT if args.timeout is None else timeout))
        outcomes = [outcome]
    else:
        progress = Progress(cfg, args.run, enabled=not args.quiet)
        try:
            outcomes = asyncio.run(oneshot.flush(
                cfg, args.run, timeout=oneshot.DEFAULT_TIMEOUT if args.timeout is None else timeout,
                wait_if_busy=not args.no_wait, on_progress=progress.update,
                # On a terminal an outage is said as it begins: a dead port was silent for --timeout.
                quiet_retries=args.quiet or not sys.stderr.isatty(),
            ))
        finally:
            progress.close()
    code = _exit_code(outcomes)
    if code == EXIT_OK and not _stopped_cleanly(cfg, outcomes):
        code = EXIT_UNREACHABLE  # stopped with a request cut short: the next flush reconciles it
    failed = []
    for o in outcomes:
        if o.status in ("auth", "server", "error", "unreachable", "busy"):
            detail = o.message or o.status
            if o.status == "unreachable":
                detail = f"Ara unreachable, spool kept: {detail}"
            elif o.status == "server":
                detail = f"not a working Ara, spool kept: {detail}"
            _say("ERROR", f"run {o.run_id}: {detail}")
            failed.append(o.run_id)
        elif o.status == "stopped":
            _say("INFO", f"run {o.run_id}: stopped; checkpoint saved, the rest stays in the spool")
        elif o.quarantined:
            _say("WARNING", f"run {o.run_id}: {o.quarantined} line(s) quarantined, see "
                 f"{cfg.spool_dir}/{o.run_id}.rejected.jsonl")
    if failed and code in (EXIT_UNREACHABLE, EXIT_SERVER, EXIT_AUTH):
        _say("ERROR", f"once fixed, ship them with: {_retry_hint(cfg, failed)}")
    # --quiet (the timer's) is silent on a terminal; in the journal a success still says so.
    if (not args.quiet or (_journal() and not args.until_end)) and code == EXIT_OK:
        shipped = sum(o.shipped for o in outcomes)
        if outcomes:
            _say("INFO", f"{shipped} event(s) shipped for {len(outcomes)} run(s) to {cfg.display_server}")
        else:
            _say("INFO", f"nothing to ship: every run in {cfg.spool_dir} is in {cfg.display_server}")
    return code


def _retention(days: float | None, action: str | None) -> Any:
    """The retention settings from the environment, with the command's flags on top."""
    from ara_spool.spool.retention import Retention

    retention = Retention.from_env()
    if days is not None:
        retention.days = days
    if action:
        retention.action = action
    retention.check()
    return retention


def _daemon(cfg: Config, args: argparse.Namespace) -> int:
    from ara_spool.flusher.daemon import run_daemon

    retention = _retention(args.retention_days, args.retention_action)
    if args.max_backoff:
        cfg.max_backoff = args.max_backoff
    return run_daemon(cfg, poll=args.poll, retention=retention, retention_interval=args.retention_interval)


# -- requeue ----------------------------------------------------------------------------------
def cmd_requeue(args: argparse.Namespace) -> int:
    from ara_spool.spool.paths import list_runs
    from ara_spool.spool.quarantine import requeue

    cfg = _config(args)
    _known_runs(cfg, args.run)
    code = EXIT_OK
    acted = False
    for run_id in args.run or list_runs(cfg.spool_dir):
        result = requeue(RunPaths.of(cfg.spool_dir, run_id))
        acted = acted or bool(result.busy or result.requeued or result.kept)
        if result.busy:
            print(f"ara-spool: run {run_id}: a flusher is shipping it; try again when it is done", file=sys.stderr)
            code = EXIT_BUSY
            continue
        if result.requeued or result.kept:
            kept = f"; {result.kept} line(s) kept in quarantine (not a valid event)" if result.kept else ""
            print(f"ara-spool: run {run_id}: {result.requeued} line(s) back in line to ship{kept}", file=sys.stderr)
    if not acted:
        _say("INFO", f"nothing to requeue: no quarantined line in {', '.join(args.run or []) or cfg.spool_dir}")
    return code


def _stopped_cleanly(cfg: Config, outcomes: list[Any]) -> bool:
    """Every run a SIGTERM/SIGINT stopped (e.g. `systemctl stop`) left a clean checkpoint: no
    request was cut short, the next flush goes on from there. True when nothing was stopped."""
    from ara_spool.spool.state import read_state_quiet

    for o in outcomes:
        if o.status == "stopped":
            st = read_state_quiet(RunPaths.of(cfg.spool_dir, o.run_id), cfg.destination)
            if st is not None and not st.clean:
                return False
    return True


# -- status -----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from ara_spool.flusher.status import collect, render_table

    cfg = _config(args)
    _known_runs(cfg, args.run)
    rows = collect(cfg, args.run)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    free = disk_free(cfg.spool_dir)
    if free is not None and free < DISK_FULL_BYTES:
        print(f"ara-spool: the spool's disk is full ({free} bytes free): events cannot be spooled and "
              "flushers pause (ENOSPC) until space frees", file=sys.stderr)
    return EXIT_OK


# -- env --------------------------------------------------------------------------------------
def cmd_env(args: argparse.Namespace) -> int:
    from ara_spool.handlers import env_lines

    print("\n".join(env_lines()))
    return EXIT_OK


# -- verify -----------------------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    from ara_spool.flusher.verify import verify

    cfg = _config(args)
    # Each run against the Ara it went to, unless --server names one.
    report, ok = verify(cfg, args.run, repair=args.repair, ara=not args.offline, server_given=bool(args.server))
    print(json.dumps(report, indent=2) if args.json else "\n".join(r["summary"] for r in report))
    return EXIT_OK if ok else EXIT_QUARANTINED


# -- prune ------------------------------------------------------------------------------------
def cmd_prune(args: argparse.Namespace) -> int:
    from ara_spool.spool.paths import default_spool_dir
    from ara_spool.spool.retention import apply

    retention = _retention(args.days, args.action)
    if retention.days is None:
        return _fail("prune needs --days N (or ARA_SPOOL_RETENTION_DAYS)", EXIT_USAGE)
    spool_dir = Path(args.spool_dir) if args.spool_dir else default_spool_dir()
    report = apply(spool_dir, retention)
    if not args.quiet:
        done = "archived into " + str(spool_dir / "archive") if retention.action == "archive" else "removed"
        print(f"ara-spool: {len(report.retired)} run(s) shipped and idle for {retention.days:g} day(s) {done}; "
              f"{report.kept} kept", file=sys.stderr)
    if report.failed:
        return _fail(f"could not retire {len(report.failed)} run(s): {', '.join(report.failed)} (see the log)")
    return EXIT_OK


def _version() -> str:
    try:
        return importlib.metadata.version("ara-spool")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def _options_env(sp: argparse.ArgumentParser) -> list[str]:
    """The variables a command reads because of the options it has (--spool-dir, --server)."""
    dests = {a.dest for a in sp._actions}
    return (SPOOL_ENV if "spool_dir" in dests else []) + (API_ENV if "server" in dests else [])


def _epilog(name: str, sp: argparse.ArgumentParser) -> str:
    exits = COMMAND_EXITS.get(name, {EXIT_OK: None, EXIT_ERROR: None, EXIT_USAGE: None})
    lines = ["exit codes:"]
    lines += [f"  {code}  {meaning or EXIT_MEANINGS[code]}" for code, meaning in sorted(exits.items())]
    env = COMMAND_ENV.get(name, [])[:1] + _options_env(sp) + COMMAND_ENV.get(name, [])[1:] + LOG_ENV
    lines += ["", "environment (options win over it):"] + [f"  {v}" for v in env]
    if sp.epilog:  # a command's own closing note
        lines += ["", sp.epilog]
    return "\n".join(lines)


def _finish_help(p: argparse.ArgumentParser) -> None:
    """Give every command's --help its exit codes and the environment it reads, kept as laid out."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                for a in sp._actions:
                    if a.nargs != 0 and a.metavar is None and a.option_strings:
                        a.metavar = "|".join(a.choices) if a.choices else METAVARS.get(a.dest)
                sp.epilog = _epilog(name, sp)
                sp.formatter_class = argparse.RawDescriptionHelpFormatter
                sp.description = sp.description or next(
                    (c.help for c in action._choices_actions if c.dest == name), None)
    p.epilog = ("exit codes: 0 success, 1 unexpected error, 2 bad usage or configuration; flush and verify have "
                "more (see `ara-spool COMMAND --help`).\n"
                "Ara's own `ara` CLI reads the same server: ARA_API_CLIENT=http ARA_API_SERVER=URL ara playbook list")
    p.formatter_class = argparse.RawDescriptionHelpFormatter


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


class _Parser(argparse.ArgumentParser):
    """argparse echoes a rejected argument in its error: a URL there loses its credentials first."""

    def error(self, message: str) -> NoReturn:
        super().error(_URL.sub(lambda m: settings.redact_url(m.group(0)), message))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ara-spool",
        description="Durable, non-blocking audit trail from Ansible to Ara: "
        "spool events, ship them in order, exactly once.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, api: bool = True) -> None:
        sp.add_argument("--spool-dir", help="spool directory (default $ARA_SPOOL_DIR or ~/.local/state/ara-spool)")
        if api:
            sp.add_argument("--server", help="Ara API server URL (default $ARA_API_SERVER or http://127.0.0.1:8000)")
            sp.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
            sp.add_argument("--ca-bundle", help="CA file for TLS verification")
            sp.add_argument("--api-timeout", type=float, help="seconds per request (default $ARA_API_TIMEOUT or 30)")

    e = sub.add_parser("emit", help="spool one explicit event (task, status, host, duration, details)")
    e.add_argument("--run", help="run id (default $ARA_RUN_ID)")
    e.add_argument("--task", help="task name shown in Ara (required with an event)")
    e.add_argument("--host", help="host name shown in Ara (required with an event)")
    e.add_argument("--status", choices=schema.EVENT_STATUSES, help="the event's status (required with an event)")
    e.add_argument("--end", nargs="?", const="completed", choices=("completed", "failed"), metavar="STATUS",
                   help="then end the run: completed (the default) or failed; a run made only of emits ends in Ara")
    e.add_argument("--duration", type=float, help="seconds the step took")
    e.add_argument("--details", help="JSON stored as the result's content")
    e.add_argument("--changed", action="store_true", help="mark the result changed")
    common(e, api=False)
    e.set_defaults(func=cmd_emit)

    f = sub.add_parser("flush", help="ship pending events to Ara")
    f.add_argument("--run", action="append", help="only this run (repeatable); default all pending")
    f.add_argument("--timeout", type=float,
                   help="give up a run after this many seconds without progress (Ara down, hanging); what is "
                   "left stays in the spool (default 60; with --until-end 300 after the playbook ended; 0: never)")
    f.add_argument("--until-end", action="store_true",
                   help="follow one live run (--run) until its run_end is shipped (the in-play flusher)")
    f.add_argument("--follow", action="store_true", help="daemon: ship every run as it grows, until SIGTERM")
    f.add_argument("--no-wait", action="store_true", help="return at once if another flusher holds a run")
    f.add_argument("--concurrency", type=int, help="runs shipped at once (default $ARA_SPOOL_CONCURRENCY or 4)")
    f.add_argument("--window", type=int, help="requests in flight per run, one per host (default $ARA_SPOOL_WINDOW "
                   "or 16; 1: one at a time)")
    g = f.add_argument_group("daemon (--follow)")
    g.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the spool dir (default 0.5)")
    g.add_argument("--max-backoff", type=float,
                   help="longest wait between retries while Ara is down (default $ARA_SPOOL_MAX_BACKOFF or 30)")
    g.add_argument("--retention-days", type=float,
                   help="retire runs wholly shipped and idle this many days (default $ARA_SPOOL_RETENTION_DAYS; "
                   "unset: keep forever)")
    g.add_argument("--retention-action", choices=["delete", "archive"],
                   help="delete retired runs, or gzip them into <spool>/archive/ "
                   "(default $ARA_SPOOL_RETENTION_ACTION or delete)")
    g.add_argument("--retention-interval", type=float, default=3600.0, help=argparse.SUPPRESS)
    f.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # the ansible-playbook a run follows
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    common(f)
    f.set_defaults(func=cmd_flush)

    ir = sub.add_parser("import", help="import runs recorded elsewhere (ansible-runner, AWX, ansible-navigator "
                        "artifact dirs) into the spool, then ship them")
    ir.add_argument("source", choices=["runner"], help="runner: ansible-runner artifacts/<ident> dirs, or "
                    "private data dirs holding many")
    ir.add_argument("paths", nargs="+", metavar="PATH", help="an artifacts/<ident> dir or a private data dir")
    ir.add_argument("--follow", action="store_true",
                    help="follow runs still being written until their status file says they ended; a private "
                    "data dir (or artifacts dir) is also watched for new runs, each followed likewise, until "
                    "SIGTERM/SIGINT (exit 0: what is spooled and not shipped stays in the spool for the next "
                    "import or flush); with artifact dirs only, exit once each run ended")
    ir.add_argument("--poll", type=float, default=1.0, help="seconds between looks with --follow (default 1)")
    ir.add_argument("--stall", type=float, help="with --follow, stop following a run that has had no new event for "
                    "this many seconds and has not ended (its ansible-runner was killed); default: wait")
    ir.add_argument("--timeout", type=float, default=60.0,
                    help="give up shipping a run after this many seconds without progress (default 60)")
    ir.add_argument("--no-ship", action="store_true", help="only spool; a flusher ships later")
    ir.add_argument("--window", type=int, help="requests in flight per run (default $ARA_SPOOL_WINDOW or 16)")
    ir.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    common(ir)
    ir.set_defaults(func=cmd_import)

    s = sub.add_parser("status", help="per run: pending, shipped, quarantined, last error, Ara link")
    s.add_argument("--run", action="append", help="only this run (repeatable)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    common(s, api=False)  # it reads the spool only: no server, TLS or timeout
    s.set_defaults(func=cmd_status)

    q = sub.add_parser("requeue", help="put quarantined lines back in line to ship, once (after fixing the cause)")
    q.add_argument("--run", action="append", help="only this run (repeatable); default every run")
    common(q, api=False)
    q.set_defaults(func=cmd_requeue)

    v = sub.add_parser("env", help="print the exports that enable the callback, action plugin and role",
                       epilog='use it as:  eval "$(ara-spool env)"   (it prints shell export lines; running it '
                       "alone changes nothing)")
    v.set_defaults(func=cmd_env)

    r = sub.add_parser("verify", help="check each spool (parse, schema, order, torn tail, state)")
    r.add_argument("--run", action="append", help="only this run (repeatable)")
    r.add_argument("--repair", action="store_true",
                   help="move a torn tail, and bad lines the flusher passed, into the quarantine (no byte lost)")
    r.add_argument("--offline", action="store_true", help="do not compare with Ara")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    common(r)
    r.set_defaults(func=cmd_verify)

    pr = sub.add_parser("prune", help="retire runs wholly in Ara and idle N days (what the daemon does hourly)")
    pr.add_argument("--days", type=float,
                    help="idle this many days (default $ARA_SPOOL_RETENTION_DAYS; 0: every wholly shipped run)")
    pr.add_argument("--action", choices=["delete", "archive"],
                    help="delete their files, or gzip them into <spool>/archive/ "
                    "(default $ARA_SPOOL_RETENTION_ACTION or delete)")
    pr.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    common(pr, api=False)
    pr.set_defaults(func=cmd_prune)
    _finish_help(p)
    return p


def setup_logging(verbosity: int) -> None:
    level = settings.env_str("ARA_SPOOL_LOG_LEVEL")
    if not level:
        level = "WARNING" if verbosity == 0 else "INFO" if verbosity == 1 else "DEBUG"
    # Under systemd, journald stamps each line and reads its level from a `<N>` prefix.
    handler = logging.StreamHandler(sys.stderr)
    if _journal():
        handler.setFormatter(_JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except settings.SettingError as exc:  # ConfigError and RetentionConfigError too
        return _fail(f"configuration: {exc}", EXIT_USAGE)
    except (UnsafeRunId, UnsafeSpoolPath, UnknownRun) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except schema.SchemaError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        text = str(exc.strerror or exc)
        return _fail(f"{exc.filename}: {text}" if exc.filename else text, EXIT_ERROR)
    except KeyboardInterrupt:  # before the event loop took SIGINT over: nothing was under way
        return _fail("interrupted; the spool keeps every event", 130)


if __name__ == "__main__":
    sys.exit(main())
