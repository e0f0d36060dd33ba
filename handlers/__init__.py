"""The Ansible side of ara-spool: callback and action plugins, and the `ara_spool` role."""

from __future__ import annotations

import shlex
from pathlib import Path

HERE = Path(__file__).resolve().parent
CALLBACK_DIR = HERE / "plugins" / "callback"
ACTION_DIR = HERE / "plugins" / "action"
ROLES_DIR = HERE / "roles"


def env_lines() -> list[str]:
    """Export lines (POSIX sh) that make the callback, the action plugin and the role available to
    Ansible, keeping what the user already has on those paths after ours."""
    pairs = [
        ("ANSIBLE_CALLBACK_PLUGINS", str(CALLBACK_DIR)),
        ("ANSIBLE_ACTION_PLUGINS", str(ACTION_DIR)),
        ("ANSIBLE_ROLES_PATH", str(ROLES_DIR)),
    ]
    return [f"export {name}={shlex.quote(value)}${{{name}:+:${name}}}" for name, value in pairs]
