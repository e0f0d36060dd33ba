"""The `ara-spool` command: emit, flush, status, env, verify."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ara_spool.flusher.config import Config, ConfigError
from ara_spool.spool import schema, writer
from ara_spool.spool.paths import UnsafeRunId, UnsafeSpoolPath, check_run_id

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_QUARANTINED = 5
EXIT_BUSY = 6

# What each exit code means, for `--help` (the README's table of flush's exit codes says the same).
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_ERROR: "unexpected error (a corrupt state file, an unreadable spool, a failed write)",
    EXIT_USAGE: "bad usage or configuration (the message names the option or variable)",
    EXIT_UNREACHABLE: "Ara unreachable, or stopped by a signal: the spool is kept",
    EXIT_AUTH: "auth refused (401/403) or TLS verification failed: the spool is kept",
    EXIT_QUARANTINED: "some events were quarantined (see <run>.rejected.jsonl)",
    EXIT_BUSY: "another flusher holds the run and had not passed its end in time",
}
# Per command, for its --help: its exit codes, with a meaning of its own or None for EXIT_MEANINGS'
# (a command missing here gets 0, 1 and 2) ...
COMMAND_EXITS: dict[str, dict[int, str | None]] = {
    "emit": {EXIT_OK: "the event is in the spool",
             EXIT_ERROR: "the spool could not be written (or is full under ARA_SPOOL_FULL_POLICY=refuse)",
             EXIT_USAGE: None},
    "flush": {EXIT_OK: "everything is in Ara (--follow: stopped by SIGTERM after its checkpoint)", EXIT_ERROR: None,
              EXIT_USAGE: None, EXIT_UNREACHABLE: None, EXIT_AUTH: None, EXIT_QUARANTINED: None, EXIT_BUSY: None},
    "status": {EXIT_OK: "the table (or JSON) was printed", EXIT_ERROR: None, EXIT_USAGE: None},
    "env": {EXIT_OK: "the export lines were printed"},
    "verify": {EXIT_OK: "every run checked is sound", EXIT_ERROR: None, EXIT_USAGE: None,
               EXIT_QUARANTINED: "problems found (each is printed; --repair fixes what it can)"},
}
# ... and the environment variables it reads besides those its options imply (_options_env).
COMMAND_ENV: dict[str, list[str]] = {
    "emit": ["ARA_RUN_ID", "ARA_SPOOL_FSYNC", "ARA_SPOOL_MAX_BYTES", "ARA_SPOOL_FULL_POLICY"],
    "flush": ["ARA_SPOOL_CONCURRENCY", "ARA_SPOOL_MAX_BACKOFF", "ARA_SPOOL_RETENTION_DAYS",
              "ARA_SPOOL_RETENTION_ACTION", "ARA_SPOOL_MAX_BYTES", "ARA_SPOOL_FULL_POLICY",
              "NOTIFY_SOCKET, WATCHDOG_USEC (systemd, with --follow)"],
}
SPOOL_ENV = ["ARA_SPOOL_DIR (else $XDG_STATE_HOME/ara-spool or ~/.local/state/ara-spool)", "ARA_SPOOL_GROUP_SHARED"]
API_ENV = ["ARA_API_SERVER", "ARA_API_USERNAME, ARA_API_PASSWORD, ARA_API_PASSWORD_FILE (HTTP Basic)",
           "ARA_API_TOKEN, ARA_API_TOKEN_FILE (Bearer, for a proxy in front of Ara)",
           "CREDENTIALS_DIRECTORY (systemd: files ara-api-password, ara-api-token)",
           "ARA_API_INSECURE", "ARA_API_CA_BUNDLE", "ARA_API_TIMEOUT"]
# Metavars by option dest, so `--help` reads like the README (`--run ID`, not `--run RUN`).
METAVARS = {"run": "ID", "task": "NAME", "host": "HOST", "duration": "SECONDS", "details": "JSON",
            "timeout": "SECONDS", "concurrency": "N", "poll": "SECONDS", "max_backoff": "SECONDS",
            "retention_days": "DAYS", "spool_dir": "DIR", "server": "URL", "ca_bundle": "FILE",
            "api_timeout": "SECONDS"}
LOG_ENV = ["ARA_SPOOL_LOG_LEVEL (else WARNING; -v INFO, -vv DEBUG)"]

log = logging.getLogger("ara_spool")


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"ara-spool: {message}", file=sys.stderr)
    return code


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
    cfg.check()
    return cfg


# -- emit -------------------------------------------------------------------------------------
def cmd_emit(args: argparse.Namespace) -> int:
    run_id = args.run or os.environ.get("ARA_RUN_ID")
    if not run_id:
        return _fail("emit needs --run ID (or ARA_RUN_ID)", EXIT_USAGE)
    details: Any = {}
    if args.details is not None:
        try:
            details = json.loads(args.details)
        except ValueError as exc:
            return _fail(f"--details is not valid JSON: {exc}", EXIT_USAGE)
    body: dict[str, Any] = {"task": args.task, "status": args.status, "host": args.host, "details": details}
    if args.duration is not None:
        if args.duration < 0:
            return _fail("--duration must not be negative", EXIT_USAGE)
        body["duration"] = args.duration
    if args.changed:
        body["changed"] = True
    cfg_dir = Path(args.spool_dir) if args.spool_dir else None
    writer.append(run_id, "event", body, spool_dir=cfg_dir)
    return EXIT_OK


# -- flush ------------------------------------------------------------------------------------
def _exit_code(outcomes: list[Any]) -> int:
    statuses = {o.status for o in outcomes}
    for status, code in (("auth", EXIT_AUTH), ("error", EXIT_ERROR), ("unreachable", EXIT_UNREACHABLE),
                         ("stopped", EXIT_UNREACHABLE), ("busy", EXIT_BUSY)):
        if status in statuses:
            return code
    if any(o.quarantined for o in outcomes):
        return EXIT_QUARANTINED
    return EXIT_OK


def cmd_flush(args: argparse.Namespace) -> int:
    from ara_spool.flusher import oneshot
    from ara_spool.flusher.progress import Progress

    cfg = _config(args)
    for run_id in args.run or []:
        check_run_id(run_id)
    if args.follow:
        from ara_spool.flusher.daemon import run_daemon
        from ara_spool.spool.retention import Retention, RetentionConfigError

        try:
            retention = Retention.from_env()
            if args.retention_days is not None:
                retention.days = args.retention_days
            if args.retention_action:
                retention.action = args.retention_action
            retention.check()
        except RetentionConfigError as exc:
            return _fail(f"configuration: {exc}", EXIT_USAGE)
        try:
            max_backoff = args.max_backoff or float(os.environ.get("ARA_SPOOL_MAX_BACKOFF") or 0)
        except ValueError:
            return _fail("configuration: ARA_SPOOL_MAX_BACKOFF is not a number", EXIT_USAGE)
        if max_backoff > 0:
            cfg.max_backoff = max_backoff
        return run_daemon(cfg, poll=args.poll, retention=retention, retention_interval=args.retention_interval)
    progress = Progress(cfg, args.run, enabled=not args.quiet)
    try:
        outcomes = asyncio.run(oneshot.flush(
            cfg, args.run, timeout=args.timeout, until_end=args.until_end,
            wait_if_busy=not args.no_wait, on_progress=progress.update, parent_pid=args.parent,
        ))
    except KeyboardInterrupt:
        return _fail("interrupted; what was not shipped stays in the spool", EXIT_UNREACHABLE)
    finally:
        progress.close()
    code = _exit_code(outcomes)
    for o in outcomes:
        if o.status in ("auth", "error", "unreachable", "busy", "stopped"):
            detail = o.message or o.status
            if o.status == "unreachable":
                detail = f"Ara unreachable, spool kept: {detail}"
            elif o.status == "stopped":
                detail = "stopped before the end; the rest stays in the spool"
            print(f"ara-spool: run {o.run_id}: {detail}", file=sys.stderr)
        elif o.quarantined:
            print(f"ara-spool: run {o.run_id}: {o.quarantined} line(s) quarantined, see "
                  f"{cfg.spool_dir}/{o.run_id}.rejected.jsonl", file=sys.stderr)
    if not args.quiet and code == EXIT_OK and outcomes:
        shipped = sum(o.shipped for o in outcomes)
        print(f"ara-spool: {shipped} event(s) shipped for {len(outcomes)} run(s) to {cfg.display_server}",
              file=sys.stderr)
    return code


# -- status -----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from ara_spool.flusher.status import collect, render_table

    cfg = _config(args)
    rows = collect(cfg, args.run)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
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
    report, ok = verify(cfg, args.run, repair=args.repair, ara=not args.offline)
    print(json.dumps(report, indent=2) if args.json else "\n".join(r["summary"] for r in report))
    return EXIT_OK if ok else EXIT_QUARANTINED


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    e.add_argument("--task", required=True, help="task name shown in Ara")
    e.add_argument("--host", required=True, help="host name shown in Ara")
    e.add_argument("--status", required=True, choices=["ok", "failed", "skipped", "unreachable"])
    e.add_argument("--duration", type=float, help="seconds the step took")
    e.add_argument("--details", help="JSON stored as the result's content")
    e.add_argument("--changed", action="store_true", help="mark the result changed")
    common(e, api=False)
    e.set_defaults(func=cmd_emit)

    f = sub.add_parser("flush", help="ship pending events to Ara")
    f.add_argument("--run", action="append", help="only this run (repeatable); default all pending")
    f.add_argument("--timeout", type=float, help="give up after this many seconds (spool kept)")
    f.add_argument("--until-end", action="store_true", help="follow the named runs until their run_end is shipped")
    f.add_argument("--follow", action="store_true", help="daemon: ship every run as it grows, until SIGTERM")
    f.add_argument("--no-wait", action="store_true", help="return at once if another flusher holds a run")
    f.add_argument("--concurrency", type=int, help="runs shipped at once (default 4)")
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

    s = sub.add_parser("status", help="per run: pending, shipped, quarantined, last error, Ara link")
    s.add_argument("--run", action="append", help="only this run (repeatable)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    common(s)
    s.set_defaults(func=cmd_status)

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
    _finish_help(p)
    return p


def setup_logging(verbosity: int) -> None:
    level = os.environ.get("ARA_SPOOL_LOG_LEVEL")
    if not level:
        level = "WARNING" if verbosity == 0 else "INFO" if verbosity == 1 else "DEBUG"
    # Under systemd, journald stamps each line: no timestamp of our own.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except ConfigError as exc:
        return _fail(f"configuration: {exc}", EXIT_USAGE)
    except (UnsafeRunId, UnsafeSpoolPath) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except schema.SchemaError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
