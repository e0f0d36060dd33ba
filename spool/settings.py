"""Reading settings from the environment: the one boolean rule, the one number rule, and the list
of every variable the project reads (the README's configuration table is checked against it by
tests/test_settings.py).

The spool's own settings are read here; the flusher's (Ara's ARA_API_* names and its shipping
knobs) in flusher/config.py, with these same helpers. A value that cannot work is an error that
names the variable (SettingError), never a silent default.
"""

from __future__ import annotations

import os

TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE = frozenset({"0", "false", "no", "off", "n", "f"})

# Every environment variable the spool and the flusher read, and what for.
SPOOL_SETTINGS = {
    "ARA_SPOOL_DIR": "spool directory",
    "ARA_SPOOL_GROUP_SHARED": "the spool is shared by a group (2770 dir, 0660 files)",
    "ARA_SPOOL_FSYNC": "fsync each appended event",
    "ARA_SPOOL_MAX_BYTES": "spool size cap",
    "ARA_SPOOL_FULL_POLICY": "over the cap: warn or refuse",
    "ARA_SPOOL_RETENTION_DAYS": "retire shipped runs idle this long",
    "ARA_SPOOL_RETENTION_ACTION": "delete or archive retired runs",
}


class SettingError(ValueError):
    """A setting that cannot work; the message names the variable."""


def parse_bool(raw: object) -> bool | None:
    """True/False for the usual spellings (as Ansible reads them), None for anything else."""
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    return None


def env_str(name: str) -> str | None:
    """The variable's value, None when unset or empty."""
    return os.environ.get(name) or None


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = parse_bool(raw)
    if value is None:
        raise SettingError(f"{name}={raw!r} is not a boolean (use true or false)")
    return value


def env_number(name: str, default: float | None, *, minimum: float = 0.0, inclusive: bool = False) -> float | None:
    """A number above `minimum` (or equal to it when inclusive), else SettingError."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number") from None
    if value < minimum or (value == minimum and not inclusive) or value != value:
        raise SettingError(f"{name}={raw!r} must be {'at least' if inclusive else 'above'} {minimum:g}")
    return value


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise SettingError(f"{name}={raw!r}: use one of {', '.join(choices)}")
    return raw


def redact_url(url: str) -> str:
    """A URL without its user:password@ part, for every message, log line and printed command.
    Textual (no parsing that could raise on a malformed URL): everything between `//` and the last
    `@` before the path is dropped."""
    scheme, sep, rest = str(url).partition("//")
    if not sep:
        return str(url)
    cut = len(rest)
    for ch in "/?#":
        at = rest.find(ch)
        if at >= 0:
            cut = min(cut, at)
    netloc, tail = rest[:cut], rest[cut:]
    return scheme + sep + netloc.rpartition("@")[2] + tail


def url_has_credentials(url: str) -> bool:
    return redact_url(url) != str(url)
