"""What Ara's own callback (ara_default) records and masks, for the ara_spool callback.

Pure functions and one small accumulator, no Ansible import and no I/O, so that the callback
records what a user of ara_default expects to see in Ara, with the same switches:

- `mask_facts`: `ignored_facts` (default `ansible_env`) replaced by a note in a result's
  `ansible_facts`, before anything is written to the spool; `all` masks every fact.
- `playbook_arguments`: ansible-playbook's CLI options with `ignored_arguments` (default
  `extra_vars`) replaced by a note.
- `argument_labels`: the automatic labels (`check:False`, `tags:all`, ...) from `argument_labels`.
- `FilePatterns`: `ignored_files`, substrings or `regex:` patterns; the default `.ansible/tmp`
  stands for Ansible's local temporary directory.
- `TaskNotes`: a task's exceptions, warnings and deprecations (Ara's "Notes"), from its results.
- `controller_name`: the controller as ara_default names it (fqdn by default).
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

IGNORED_FACT = "Not saved by ARA as configured by 'ignored_facts'"
IGNORED_ARGUMENT = "Not saved by ARA as configured by 'ignored_arguments'"
IGNORED_FILE = "Not saved by ARA as configured by 'ignored_files'"
CREDENTIAL_ARGUMENT = "Not saved by ara-spool: it sets an Ara credential"
# ara-spool's own credential variables: an extra var that sets one is never recorded, whatever
# ignored_arguments says (tokens and passwords never reach the spool).
CREDENTIAL_VARS = ("ara_api_token", "ara_api_password")
# Actions whose facts are the host's facts (ara_default's list).
SETUP_ACTIONS = frozenset({"setup", "ansible.builtin.setup", "ansible.legacy.setup",
                           "gather_facts", "ansible.builtin.gather_facts", "ansible.legacy.gather_facts"})


def sorted_json(data: Any, encoder: type[json.JSONEncoder] | None = None) -> Any:
    """data as plain JSON values, with every object's keys sorted (as ara_default stores content).
    Keys that cannot be sorted together (mixed types) keep their order."""
    try:
        text = json.dumps(data, cls=encoder, ensure_ascii=False, sort_keys=True)
    except TypeError:
        text = json.dumps(data, cls=encoder, ensure_ascii=False)
    return json.loads(text)


def mask_facts(content: Any, ignored: list[str]) -> Any:
    """Replace the ignored facts of a result (and of each loop item) by a note, in place."""
    if not isinstance(content, dict):
        return content
    facts = content.get("ansible_facts")
    if isinstance(facts, dict) and ignored:
        if "all" in ignored:
            content["ansible_facts"] = {"all": IGNORED_FACT}
        else:
            for name in ignored:
                if name in facts:
                    facts[name] = IGNORED_FACT
    items = content.get("results")
    if isinstance(items, list):  # a loop of setup or set_fact: stricter than ara_default, never leak
        for item in items:
            mask_facts(item, ignored)
    return content


def host_facts(action: str, content: Any) -> dict[str, Any] | None:
    """The facts to record on the host for this result, as ara_default does: a setup or
    gather_facts result's (already masked) ansible_facts."""
    if action in SETUP_ACTIONS and isinstance(content, dict) and isinstance(content.get("ansible_facts"), dict):
        return content["ansible_facts"]
    return None


def playbook_arguments(cli_args: dict[str, Any], ignored: list[str]) -> dict[str, Any]:
    """ansible-playbook's options as JSON (tuples become lists), ignored ones replaced by a note;
    when extra vars are recorded, each one that sets an Ara credential is replaced by a note."""
    out = {}
    for key, value in cli_args.items():
        if key in ignored:
            value = IGNORED_ARGUMENT
        elif key == "extra_vars" and isinstance(value, (list, tuple)):
            value = [CREDENTIAL_ARGUMENT if any(name in str(v) for name in CREDENTIAL_VARS) else v for v in value]
        out[key] = value
    return json.loads(json.dumps(out, default=str))


def argument_labels(arguments: dict[str, Any], names: list[str]) -> list[str]:
    """Labels for the options named in names that are set: lists joined by commas (when not empty),
    booleans as True/False, other values when truthy."""
    labels = []
    for name in names:
        if name not in arguments:
            continue
        value = arguments[name]
        if isinstance(value, (list, tuple)):
            if value:
                labels.append(f"{name}:{','.join(str(v) for v in value)}")
        elif isinstance(value, bool):
            labels.append(f"{name}:{value}")
        elif value:
            labels.append(f"{name}:{value}")
    return labels


class FilePatterns:
    """ignored_files: a path matches a plain pattern as a substring, a `regex:` one by re.search."""

    def __init__(self, patterns: list[str], local_tmp: str | None = None) -> None:
        self.plain: list[str] = []
        self.regexes: list[re.Pattern[str]] = []
        self.invalid: list[str] = []
        for pattern in patterns or []:
            if pattern == ".ansible/tmp" and local_tmp:
                pattern = os.path.dirname(local_tmp)  # the user's configured local temp dir
            if pattern.startswith("regex:"):
                try:
                    self.regexes.append(re.compile(pattern[len("regex:"):]))
                except re.error:
                    self.invalid.append(pattern)
            elif pattern:
                self.plain.append(pattern)

    def match(self, path: str) -> bool:
        return any(p in path for p in self.plain) or any(r.search(path) for r in self.regexes)


class TaskNotes:
    """One task's exceptions, warnings and deprecations, gathered from its results' content,
    each kept once in the order first seen."""

    def __init__(self) -> None:
        self.exceptions: list[str] = []
        self.warnings: list[str] = []
        self.deprecations: list[dict[str, Any]] = []

    def add(self, content: Any) -> None:
        if not isinstance(content, dict):
            return
        exception = content.get("exception")
        if isinstance(exception, str) and exception not in self.exceptions:
            self.exceptions.append(exception)
        for warning in content.get("warnings") or []:
            if isinstance(warning, str) and warning not in self.warnings:
                self.warnings.append(warning)
        seen = {self._key(d) for d in self.deprecations}
        for dep in content.get("deprecations") or []:
            if isinstance(dep, dict) and self._key(dep) not in seen:
                seen.add(self._key(dep))
                self.deprecations.append(dep)

    @staticmethod
    def _key(dep: dict[str, Any]) -> tuple[Any, ...]:
        return (dep.get("collection_name"), dep.get("msg"), dep.get("version"))

    def fields(self) -> dict[str, list[Any]]:
        """The non-empty lists, named as Ara's task fields."""
        out: dict[str, list[Any]] = {}
        for name in ("exceptions", "warnings", "deprecations"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


def controller_name(record: bool, name: str | None, fmt: str = "fqdn") -> str | None:
    """The controller as ara_default records it: None when not recorded, the given name, or the
    host's fqdn/hostname, optionally cut at the first dot (`*_short`)."""
    if not record:
        return None
    if name:
        return name
    host = socket.getfqdn() if fmt.startswith("fqdn") else socket.gethostname()
    return host.split(".")[0] if fmt.endswith("_short") else host
