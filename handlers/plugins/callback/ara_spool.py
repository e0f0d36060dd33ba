# ara-spool: record every task result of a playbook run into a local spool file, in the main
# process and without waiting on the network; a background flusher ships it to Ara.
from __future__ import annotations

DOCUMENTATION = """
name: ara_spool
type: notification
short_description: Spool every task result for ara-spool, which ships it to Ara in order, exactly once
description:
  - Appends run, play, task and result events to a run-scoped JSON-lines spool file
    (C($ARA_SPOOL_DIR/<run id>.jsonl)) in the main ansible-playbook process, with no network and no module run.
  - Inert unless enabled, by the C(ara_enabled) variable (extra vars, play vars or the ara_spool role's
    defaults) or by the C(enabled) option below.
  - While the play runs, a background C(ara-spool flush) ships the run to Ara; at the end of the run the
    remaining tail is shipped, bounded by C(flush_timeout). What cannot be shipped stays in the spool,
    and the background flusher goes on with it after the playbook ends (bounded).
options:
  enabled:
    description: Record every run, even without C(ara_enabled).
    type: bool
    default: false
    env: [{name: ARA_SPOOL_ENABLED}]
    ini: [{section: ara_spool, key: enabled}]
  spool_dir:
    description: Spool directory (default C($XDG_STATE_HOME/ara-spool) or C(~/.local/state/ara-spool)).
    type: path
    env: [{name: ARA_SPOOL_DIR}]
    ini: [{section: ara_spool, key: spool_dir}]
  run_id:
    description: Run id; the C(ara_run_id) variable wins; default a new uuid4 per ansible-playbook run.
    type: str
    env: [{name: ARA_RUN_ID}]
    ini: [{section: ara_spool, key: run_id}]
  flusher:
    description: Ship in the background while the play runs. Set false where a systemd ara-spool daemon
      ships the spool; the C(ara_spool_flusher) variable wins.
    type: bool
    default: true
    env: [{name: ARA_SPOOL_FLUSHER}]
    ini: [{section: ara_spool, key: flusher}]
  flush_timeout:
    description: Seconds the end of the run may wait for shipping, and only while Ara acknowledges
      events (a play's end never waits); the C(ara_flush_timeout) variable wins.
    type: float
    default: 30
    env: [{name: ARA_SPOOL_FLUSH_TIMEOUT}]
    ini: [{section: ara_spool, key: flush_timeout}]
  record_content:
    description: Record each result's returned data as the Ara result's content.
    type: bool
    default: true
    env: [{name: ARA_SPOOL_RECORD_CONTENT}, {name: ARA_RECORD_TASK_CONTENT}]
    ini: [{section: ara_spool, key: record_content}, {section: ara, key: record_task_content}]
  # The switches of Ara's own callback (ara_default), with its names, defaults and sources, so a
  # user switching from it keeps the same censoring and the same labels.
  ignored_facts:
    description: Host facts replaced by a note in results and not recorded as host facts (C(all) for every
      fact). Masked before the spool is written.
    type: list
    default: [ansible_env]
    env: [{name: ARA_IGNORED_FACTS}]
    ini: [{section: ara, key: ignored_facts}]
  ignored_arguments:
    description: ansible-playbook arguments replaced by a note in the playbook's recorded arguments.
    type: list
    default: [extra_vars]
    env: [{name: ARA_IGNORED_ARGUMENTS}]
    ini: [{section: ara, key: ignored_arguments}]
  ignored_files:
    description: File path patterns (substrings, or C(regex:) Python regular expressions) whose content is
      not recorded; the default C(.ansible/tmp) stands for Ansible's local temporary directory.
    type: list
    default: [.ansible/tmp]
    env: [{name: ARA_IGNORED_FILES}]
    ini: [{section: ara, key: ignored_files}]
  default_labels:
    description: Labels given to every recorded playbook.
    type: list
    default: []
    env: [{name: ARA_DEFAULT_LABELS}]
    ini: [{section: ara, key: default_labels}]
  argument_labels:
    description: ansible-playbook arguments that, when set, become labels (C(check:False), C(tags:all), ...).
    type: list
    default: [remote_user, check, tags, skip_tags, subset]
    env: [{name: ARA_ARGUMENT_LABELS}]
    ini: [{section: ara, key: argument_labels}]
  record_controller:
    description: Record the controller's host name on the playbook.
    type: bool
    default: true
    env: [{name: ARA_RECORD_CONTROLLER}]
    ini: [{section: ara, key: record_controller}]
  record_controller_name:
    description: The controller name to record instead of the host's own name.
    type: str
    env: [{name: ARA_RECORD_CONTROLLER_NAME}]
    ini: [{section: ara, key: record_controller_name}]
  localhost_as_hostname:
    description: Record the results of the hosts C(localhost) and C(127.0.0.1) under the controller's name.
    type: bool
    default: false
    env: [{name: ARA_LOCALHOST_AS_HOSTNAME}]
    ini: [{section: ara, key: localhost_as_hostname}]
  localhost_as_hostname_format:
    description: How the controller's name is taken (fqdn, fqdn_short, hostname or hostname_short).
    type: str
    default: fqdn
    choices: [fqdn, fqdn_short, hostname, hostname_short]
    env: [{name: ARA_LOCALHOST_AS_HOSTNAME_FORMAT}]
    ini: [{section: ara, key: localhost_as_hostname_format}]
  record_user:
    description: Record the user who ran the playbook.
    type: bool
    default: true
    env: [{name: ARA_RECORD_USER}]
    ini: [{section: ara, key: record_user}]
  record_user_name:
    description: The user name to record instead of the OS user's.
    type: str
    env: [{name: ARA_RECORD_USER_NAME}]
    ini: [{section: ara, key: record_user_name}]
"""

import atexit  # noqa: E402
import getpass  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from ansible import __version__ as ANSIBLE_VERSION  # noqa: E402
from ansible import constants as C  # noqa: E402
from ansible import context  # noqa: E402
from ansible.module_utils.common.json import AnsibleJSONEncoder  # noqa: E402
from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible.utils.display import Display  # noqa: E402
from ansible.vars.clean import module_response_deepcopy, strip_internal_keys  # noqa: E402

try:
    from ara_spool.handlers import runtime
except ImportError as exc:  # the plugins are thin: the package must be in Ansible's own Python
    raise ImportError(f"ara-spool is not installed in the Python that runs Ansible ({sys.executable}): "
                      f"pip install it there ({exc})") from exc
from ara_spool.handlers import nolog, parity  # noqa: E402
from ara_spool.spool import events, writer  # noqa: E402
from ara_spool.spool.paths import UnsafeRunId, check_run_id  # noqa: E402
from ara_spool.spool.process import process_identity  # noqa: E402

display = Display()
MAX_FILE_BYTES = 1024 * 1024  # larger source files are recorded as a note, not their content


def client_version() -> str:
    try:
        from importlib.metadata import version

        return f"ara-spool {version('ara-spool')}"
    except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
        return "ara-spool"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "ara_spool"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None  # set once the run is recorded
        self.dir: Path | None = None
        self.playbook_path: str | None = None
        self.play_uuid: str | None = None
        self.task_uuid: str | None = None
        self.play_batches: dict[str, int] = {}  # play uuid -> its starts (serial: one per batch)
        self.task_ends: dict[str, int] = {}  # task uuid -> its ends so far (per batch, per host under free)
        self.failed_tasks: set[str] = set()  # tasks with a failure not ignored, on any host
        self.playbook_fields: dict = {}  # the name and labels the playbook has now (a later play may change them)
        self.task_started: dict[str, str] = {}
        self.result_started: dict[tuple[str, str], str] = {}
        self.item_delegates: dict[tuple[str, str], list[str]] = {}  # (host, task uuid) -> loop items' hosts
        self.files: set[str] = set()
        self.notes: dict[str, parity.TaskNotes] = {}  # task uuid -> its exceptions, warnings, deprecations
        self.ignored_facts: list[str] = []
        self.localhost_name: str | None = None  # localhost_as_hostname: the name localhost is recorded as
        self.ignored_files = parity.FilePatterns([])
        self.flusher = None
        self.flusher_env: dict[str, str] = {}
        self.flush_timeout = 30.0
        self.ended = False
        self.broken = False  # this run cannot be recorded at all (an unsafe run id)
        self.lost = 0  # events that could not be spooled
        self.spooled = 0  # events that were
        self.main_pid = os.getpid()
        self.appending = False
        self.deferred_signal: int | None = None
        self.previous_handlers: dict[int, object] = {}

    # -- enabling -----------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook) -> None:
        self.playbook_path = os.path.abspath(playbook._file_name)

    def _play_vars(self, play) -> dict:
        """The play's variables; when the play itself does not set ara_enabled, those of its first
        host, so that `ara_enabled: true` in group_vars/host_vars (the usual place) works too."""
        try:
            manager = play.get_variable_manager()
            variables = manager.get_vars(play=play)
            if "ara_enabled" not in variables or not runtime.as_bool(variables["ara_enabled"]):
                hosts = manager._inventory.get_hosts(play.hosts)
                if hosts:
                    host_vars = manager.get_vars(play=play, host=hosts[0])
                    if runtime.as_bool(host_vars.get("ara_enabled", False)):
                        return host_vars
            return variables
        except Exception:  # noqa: BLE001 - an odd inventory must not break recording
            return {}

    def _template(self, play, variables: dict, value):
        if not isinstance(value, (str, dict, list)) or (isinstance(value, str) and "{{" not in value):
            return value
        from ansible.template import Templar

        return Templar(loader=play._loader, variables=variables).template(value)

    def _start_run(self, play, variables: dict) -> None:
        def var(name, default=None):
            return self._template(play, variables, variables.get(name, default))

        run_id = var("ara_run_id") or self.get_option("run_id") or os.environ.get(runtime.ACTIVE_ENV)
        run_id = str(run_id) if run_id else runtime.new_run_id()
        try:
            check_run_id(run_id)
        except UnsafeRunId as exc:
            display.warning(f"ara-spool: not recording this run: {exc}")
            self.broken = True
            return
        self.run_id = run_id
        self.dir = runtime.spool_dir(self.get_option("spool_dir"))
        timeout = var("ara_flush_timeout")
        self.flush_timeout = float(timeout if timeout not in (None, "") else self.get_option("flush_timeout"))
        # Forked workers (the action plugins) and the flusher inherit the id from here.
        os.environ[runtime.ACTIVE_ENV] = run_id
        os.environ["ARA_RUN_ID"] = run_id
        metadata = var("ara_default_metadata") or {}
        play_labels = var("ara_playbook_labels") or []
        if isinstance(play_labels, str):
            play_labels = [x for x in play_labels.split(",") if x]
        # As ara_default: its default labels, labels from the CLI options, then the play's.
        self.ignored_facts = list(self.get_option("ignored_facts") or [])
        self.ignored_files = parity.FilePatterns(self.get_option("ignored_files") or [], C.DEFAULT_LOCAL_TMP)
        arguments = parity.playbook_arguments(dict(context.CLIARGS), list(self.get_option("ignored_arguments") or []))
        labels = [*(self.get_option("default_labels") or []),
                  *parity.argument_labels(arguments, list(self.get_option("argument_labels") or [])),
                  *(str(x) for x in play_labels)]
        controller = parity.controller_name(self.get_option("record_controller"),
                                            self.get_option("record_controller_name"),
                                            self.get_option("localhost_as_hostname_format") or "fqdn")
        if self.get_option("localhost_as_hostname"):
            self.localhost_name = controller
        self.playbook_fields = {"name": var("ara_playbook_name"), "labels": labels, "metadata": metadata,
                                "base_labels": labels[:len(labels) - len(play_labels)]}
        self._append("run_start", {
            "path": self.playbook_path or "unknown", "name": var("ara_playbook_name"),
            "ansible_version": ANSIBLE_VERSION, "labels": labels, "arguments": arguments,
            "metadata": metadata if isinstance(metadata, dict) else {"metadata": str(metadata)},
            "controller": controller,
            "user": self._user(),
            "python_version": ".".join(map(str, sys.version_info[:3])), "client_version": client_version(),
            # Who records the run: a flusher ends it as expired once this process is gone without
            # its end spooled (a full disk). Not sent to Ara.
            "process": process_identity(self.main_pid),
        })
        if self.playbook_path:
            self._record_file(self.playbook_path)
        flusher_on = var("ara_spool_flusher")
        flusher_on = self.get_option("flusher") if flusher_on in (None, "") else runtime.as_bool(flusher_on)
        if flusher_on and not self.broken:
            env = runtime.api_env(var("ara_api_base_url"), var("ara_api_token"), var("ara_verify_ssl"))
            try:
                self.flusher = runtime.start_flusher(run_id, self.dir, env)
                self.flusher_env = env
            except OSError as exc:
                # Only claim the spool keeps events when it took them (a read-only dir takes none).
                kept = "events stay spooled" if self.spooled else "nothing could be spooled either"
                display.warning(f"ara-spool: cannot start the background flusher ({exc}); {kept}")
        atexit.register(self._at_exit)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if previous == signal.SIG_IGN:
                continue  # nohup, or a background job: the run goes on through it, so must we
            self.previous_handlers[sig] = previous
            signal.signal(sig, self._on_signal)
        display.vv(f"ara-spool: recording run {run_id} to {self.dir}")

    def _shown(self, host: str) -> str:
        """The name a host is recorded under (localhost_as_hostname)."""
        if self.localhost_name and host in ("localhost", "127.0.0.1"):
            return self.localhost_name
        return host

    def _user(self) -> str | None:
        if not self.get_option("record_user"):
            return None
        if self.get_option("record_user_name"):
            return self.get_option("record_user_name")
        try:
            return getpass.getuser()
        except Exception:  # noqa: BLE001
            return None

    # -- writing ------------------------------------------------------------------------------
    def _append(self, kind: str, body: dict, ts: str | None = None) -> None:
        if self.run_id is None or self.broken:
            return
        self.appending = True
        try:
            writer.append(self.run_id, kind, body, spool_dir=self.dir, ts=ts)
            self.spooled += 1
        except (OSError, ValueError) as exc:
            # Disk full, a size cap, permissions, a symlinked spool: say so at once, keep trying
            # (space may come back), never break the play; the end of the run gives the count.
            self.lost += 1
            if self.lost == 1:
                kept = "earlier events are kept" if self.spooled else "nothing of this run is spooled"
                display.warning(f"ara-spool: cannot write the spool for run {self.run_id}: {exc}; "
                                f"this event is not recorded, {kept}")
        finally:
            self.appending = False
        if self.deferred_signal is not None:
            sig, self.deferred_signal = self.deferred_signal, None
            self._on_signal(sig, None)

    def _record_file(self, path: str) -> None:
        if path in self.files:
            return
        self.files.add(path)
        if self.ignored_files.match(path):  # recorded (tasks refer to it), its content is not
            self._append("file", {"path": path, "content": parity.IGNORED_FILE})
            return
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
            content = data.decode("utf-8", "replace") if len(data) <= MAX_FILE_BYTES else \
                f"# {path}: larger than {MAX_FILE_BYTES} bytes, not recorded by ara-spool\n"
        except OSError as exc:
            content = f"# {path}: not readable by ara-spool ({exc.strerror})\n"
        self._append("file", {"path": path, "content": content})

    # -- plays and tasks ----------------------------------------------------------------------
    def v2_playbook_on_play_start(self, play) -> None:
        first = self.run_id is None
        if self.run_id is None and not self.broken:
            variables = self._play_vars(play)
            if not (runtime.as_bool(self._template(play, variables, variables.get("ara_enabled", False)))
                    or self.get_option("enabled")):
                return
            self._start_run(play, variables)
        if self.run_id is None:
            return
        self._end_task()
        self._end_play()
        if not first:
            self._update_playbook(play)
        self.play_uuid = str(play._uuid)[:36]
        # Ansible starts a serial play once per batch, with the same uuid: Ara gets a play per batch.
        batch = self.play_batches[self.play_uuid] = self.play_batches.get(self.play_uuid, 0) + 1
        self._append("play_start", {"uuid": self.play_uuid, "name": play.get_name(), "batch": batch})
        # Unlike ara_default, not every file Ansible loaded (vars files, `-e @file` extra vars, role
        # defaults may hold secrets in clear): only the playbook and the files tasks come from.

    def _update_playbook(self, play) -> None:
        """As ara_default: a later play's ara_playbook_name renames the playbook, its
        ara_playbook_labels replace the play labels (a play without them keeps the current ones)."""
        try:
            variables = play.get_variable_manager().get_vars(play=play)
            name = self._template(play, variables, variables.get("ara_playbook_name"))
            labels = self._template(play, variables, variables.get("ara_playbook_labels"))
        except Exception:  # noqa: BLE001 - an odd variable must not break recording
            return
        update: dict = {}
        if name and str(name) != self.playbook_fields.get("name"):
            update["name"] = self.playbook_fields["name"] = str(name)
        if isinstance(labels, str):
            labels = [x for x in labels.split(",") if x]
        if isinstance(labels, list):
            labels = [*self.playbook_fields.get("base_labels", []), *(str(x) for x in labels)]
            if sorted(labels) != sorted(self.playbook_fields.get("labels", [])):
                update["labels"] = self.playbook_fields["labels"] = labels
                update["metadata"] = self.playbook_fields.get("metadata") or {}
        if update:
            self._append("playbook_update", update)

    def v2_playbook_on_task_start(self, task, is_conditional, handler: bool = False) -> None:
        if self.run_id is None:
            return
        self._end_task()
        path, lineno = events.split_location(task.get_path())
        path = path or self.playbook_path
        if path:
            self._record_file(path)
        self.task_uuid = str(task._uuid)[:36]
        self.task_started[self.task_uuid] = _now()
        self._append("task_start", {
            "uuid": self.task_uuid, "name": task.get_name(), "action": task.action, "path": path,
            "lineno": lineno, "handler": handler, "tags": list(task.tags or []), "play_uuid": self.play_uuid,
        })

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self.v2_playbook_on_task_start(task, False, handler=True)

    def _end_task(self) -> None:
        """The current task's n-th end (a task ends once per serial batch, and under strategy free
        each time a host moves on): failed when any host failed it, in any batch."""
        if self.task_uuid is not None:
            notes = self.notes.get(self.task_uuid)
            end = self.task_ends[self.task_uuid] = self.task_ends.get(self.task_uuid, 0) + 1
            status = "failed" if self.task_uuid in self.failed_tasks else "completed"
            self._append("task_end", {"uuid": self.task_uuid, "status": status, "end": end,
                                      **(notes.fields() if notes else {})})
            self.task_started.pop(self.task_uuid, None)
            self.task_uuid = None

    def _end_play(self) -> None:
        # A play's end never waits on Ara: the background flusher ships as the run goes.
        if self.play_uuid is not None:
            self._append("play_end", {"uuid": self.play_uuid, "status": "completed"})
            self.play_uuid = None

    # -- results ------------------------------------------------------------------------------
    def v2_runner_on_start(self, host, task) -> None:
        if self.run_id is not None:
            self.result_started[(host.get_name(), str(task._uuid)[:36])] = _now()

    def v2_runner_on_ok(self, result, **kwargs) -> None:
        self._record(result, "ok", kwargs.get("ignore_errors"))

    def v2_runner_on_failed(self, result, ignore_errors: bool = False, **kwargs) -> None:
        self._record(result, "failed", ignore_errors)

    def v2_runner_on_skipped(self, result, **kwargs) -> None:
        self._record(result, "skipped", False)

    def v2_runner_on_unreachable(self, result, **kwargs) -> None:
        self._record(result, "unreachable", False)

    def _delegate(self, result) -> str:
        dvars = result._result.get("_ansible_delegated_vars") if isinstance(result._result, dict) else None
        dvars = dvars or {}
        return str(dvars.get("ansible_delegated_host") or dvars.get("ansible_host") or result._task.delegate_to or "")

    def v2_runner_item_on_ok(self, result) -> None:
        self._item_delegate(result)

    def v2_runner_item_on_failed(self, result) -> None:
        self._item_delegate(result)

    def _item_delegate(self, result) -> None:
        if self.run_id is not None and result._task.delegate_to:
            names = self.item_delegates.setdefault((result._host.get_name(), str(result._task._uuid)[:36]), [])
            name = self._delegate(result)
            if name and name not in names:
                names.append(name)

    def _content(self, result) -> dict:
        """The result as Ara's callback records it: internal keys stripped, keys sorted, ignored facts
        masked (here, before the spool is written). Ansible hands callbacks no_log results already
        censored; one that is not is censored the same way here."""
        if not self.get_option("record_content"):
            return {}
        data = result._result if isinstance(result._result, dict) else {"result": result._result}
        if result._task.no_log or data.get("_ansible_no_log"):
            data = nolog.censor(data)
        data = parity.mask_facts(strip_internal_keys(module_response_deepcopy(data)), self.ignored_facts)
        try:
            return parity.sorted_json(data, AnsibleJSONEncoder)
        except (TypeError, ValueError):
            return {"unrecordable": str(data)[:10000]}

    def _record(self, result, status: str, ignore_errors) -> None:
        if self.run_id is None:
            return
        task = result._task
        host = result._host.get_name()
        task_uuid = str(task._uuid)[:36]
        ended = _now()
        started = self.result_started.pop((host, task_uuid), None) or self.task_started.get(task_uuid) or ended
        ignore_errors = bool(ignore_errors)
        late_failure = False
        if status in ("failed", "unreachable") and not ignore_errors and task_uuid not in self.failed_tasks:
            # Charged to the result's own task: under strategy free another task may be current.
            self.failed_tasks.add(task_uuid)
            late_failure = task_uuid != self.task_uuid and task_uuid in self.task_ends
        action = str(task.action or "")
        payload = None
        facts = result._result.get("ansible_facts") if isinstance(result._result, dict) else None
        if isinstance(facts, dict) and "ara_event_payload" in facts and status == "ok":
            payload = facts["ara_event_payload"]
        # As ara_default: the host(s) the task ran on for this host (each loop item's, when it
        # loops), also when that is the host itself; none for a skipped result.
        delegated = self.item_delegates.pop((host, task_uuid), [])
        if task.delegate_to and status != "skipped" and not delegated:
            delegated = [self._delegate(result)]
        delegated = [] if status == "skipped" else [d for d in delegated if d]
        path, lineno = events.split_location(task.get_path())
        content = self._content(result)
        self.notes.setdefault(task_uuid, parity.TaskNotes()).add(content)
        body = {
            "task_uuid": task_uuid, "play_uuid": self.play_uuid, "host": self._shown(host),
            "delegated_to": [self._shown(d) for d in delegated],
            "status": status, "changed": bool(result._result.get("changed", False)), "ignore_errors": ignore_errors,
            "started": started, "ended": ended, "content": content,
            "task_name": task.get_name(), "action": action, "path": path or self.playbook_path, "lineno": lineno,
        }
        if parity.host_facts(action, content) is not None:
            body["host_facts"] = True  # the flusher records content's ansible_facts on the host
        self._append("result", body, ts=ended)
        if late_failure:  # its task has ended already (strategy free): as ara_default, it turns failed
            end = self.task_ends[task_uuid] = self.task_ends[task_uuid] + 1
            self._append("task_end", {"uuid": task_uuid, "status": "failed", "end": end, "status_only": True,
                                      **self.notes[task_uuid].fields()})
        if payload is not None:
            self._spool_payload(payload, task, host, started, ended)

    def _spool_payload(self, payload, task, host: str, started: str, ended: str) -> None:
        """The seed's pattern: `set_fact: ara_event_payload` + `notify: ara_send_event`. Handlers run
        once per host per flush with the last payload, so the payload is spooled here, as each task
        sets it, with that task's identity and time."""
        path, lineno = events.split_location(task.get_path())
        body, warning = events.payload_body(payload, task=task.get_name(), host=self._shown(host),
                                            play_uuid=self.play_uuid, path=path or self.playbook_path, lineno=lineno)
        if warning:
            display.warning(f"ara-spool: {warning}")
        self._append("event", body, ts=ended)

    # -- the end ------------------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats) -> None:
        if self.run_id is None:
            return
        self._end_task()
        self._end_play()
        counters = {}
        failed = False
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            counters[self._shown(host)] = {"ok": s["ok"], "changed": s["changed"], "failed": s["failures"],
                              "skipped": s["skipped"], "unreachable": s["unreachable"]}
            failed = failed or bool(s["failures"] or s["unreachable"])
        self._append("host_stats", counters)
        self._finish("failed" if failed else "completed")

    def _finish(self, status: str) -> None:
        if self.ended or self.run_id is None:
            return
        self.ended = True
        self._append("run_end", {"status": status})
        if self.lost:
            display.warning(f"ara-spool: {self.lost} event(s) of run {self.run_id} could not be spooled "
                            "(see the first warning); they are missing from Ara")
        if self.flusher is None:
            display.vv(f"ara-spool: run {self.run_id} spooled; the ara-spool daemon ships it")
            return
        # The run's end waits only while Ara acknowledges events, at most flush_timeout; what is
        # left, the flusher goes on shipping after we exit (flusher/follow.py).
        warning = runtime.end_of_run(self.run_id, self.dir, self.flush_timeout, self.flusher, self.flusher_env)
        if warning:
            display.warning(warning)

    def _on_signal(self, sig: int, frame) -> None:
        if os.getpid() != self.main_pid:  # a forked worker inherited this handler
            return self._chain(sig, frame)
        if self.appending:  # never re-enter the writer's lock: finish that line first
            self.deferred_signal = sig
            return None
        if sig == signal.SIGINT and callable(self.previous_handlers.get(sig)):
            # Python's handler and ansible-core's raise KeyboardInterrupt: if the play stops, the
            # run ends as the interpreter exits (_at_exit). Ended here, a play that went on anyway
            # was recorded expired while it completed: Python drops an exception a handler raises
            # while the main thread runs an at-fork hook ("Exception ignored in _releaseLock").
            return self._chain(sig, frame)
        # The interrupted task is not ended: the run's end expires it with its play.
        self._finish("expired")
        return self._chain(sig, frame)

    def _chain(self, sig: int, frame):
        previous = self.previous_handlers.get(sig)
        if callable(previous):
            return previous(sig, frame)
        if previous == signal.SIG_IGN:
            return None
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return None

    def _at_exit(self) -> None:
        if os.getpid() == self.main_pid and not self.ended:
            self._finish("expired")  # the interrupted task and its play end expired with the run
