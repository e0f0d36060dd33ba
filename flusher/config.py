"""Flusher configuration: Ara's own ARA_API_* environment names, files for secrets, flags on top."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ara_spool.spool import settings
from ara_spool.spool.paths import default_spool_dir

_env_bool = settings.env_bool

DEFAULT_SERVER = "http://127.0.0.1:8000"  # as Ara's own http client


# Every environment variable the flusher reads (the spool's own: spool/settings.py).
FLUSHER_SETTINGS = {
    "ARA_API_SERVER": "Ara's API server URL",
    "ARA_API_USERNAME": "Basic auth user",
    "ARA_API_PASSWORD": "Basic auth password (or ARA_API_PASSWORD_FILE, or a systemd credential)",
    "ARA_API_PASSWORD_FILE": "file holding the password",
    "ARA_API_TOKEN": "Bearer token for a proxy in front of Ara (or ARA_API_TOKEN_FILE, or a credential)",
    "ARA_API_TOKEN_FILE": "file holding the token",
    "ARA_API_INSECURE": "do not verify TLS certificates",
    "ARA_API_CA_BUNDLE": "CA file for TLS verification",
    "ARA_API_TIMEOUT": "seconds per request",
    "ARA_SPOOL_CONCURRENCY": "runs shipped at once",
    "ARA_SPOOL_WINDOW": "requests in flight per run",
    "ARA_SPOOL_MAX_INFLIGHT": "requests in flight across runs",
    "ARA_SPOOL_CHECKPOINT_EVERY": "events between checkpoints",
    "ARA_SPOOL_MAX_BACKOFF": "longest wait between retries",
    "ARA_SPOOL_LOG_LEVEL": "log level (overrides -v)",
    "ARA_RUN_ID": "run id for `ara-spool emit` (and the callback's)",
}


class ConfigError(settings.SettingError):
    """A setting that cannot work; the message names the variable."""


def _number(name: str, default: float) -> float:
    value = settings.env_number(name, default)
    assert value is not None
    return value


def _secret(name: str, cred_name: str) -> str | None:
    """A secret from $NAME, else the file named by $NAME_FILE, else a systemd credential."""
    value = settings.env_str(name)
    if value:
        return value
    path = settings.env_str(f"{name}_FILE")
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path and cred_dir and Path(cred_dir, cred_name).is_file():
        path = str(Path(cred_dir, cred_name))
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return None


redact_url = settings.redact_url  # the URL without user:password@, for every message


@dataclass
class Config:
    server: str = DEFAULT_SERVER
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    insecure: bool = False
    ca_bundle: str | None = None
    timeout: float = 30.0
    spool_dir: Path = field(default_factory=default_spool_dir)
    concurrency: int = 4
    window: int = 16  # requests in flight per run (one per host lane); 1: strictly one at a time
    max_inflight: int = 64  # requests in flight across all runs of one flusher
    max_backoff: float = 30.0
    checkpoint_every: int = 100  # events between checkpoints (and at most every checkpoint_seconds)
    checkpoint_seconds: float = 1.0
    task_hold_seconds: float = 2.0  # a live run's task waits this long for its end (see shipper)

    @classmethod
    def from_env(cls) -> Config:
        try:
            cfg = cls._read_env()
        except ConfigError:
            raise
        except settings.SettingError as exc:
            raise ConfigError(str(exc)) from None
        cfg.check()
        return cfg

    @classmethod
    def _read_env(cls) -> Config:
        return cls(
            server=settings.env_str("ARA_API_SERVER") or DEFAULT_SERVER,
            username=settings.env_str("ARA_API_USERNAME"),
            password=_secret("ARA_API_PASSWORD", "ara-api-password"),
            token=_secret("ARA_API_TOKEN", "ara-api-token"),
            insecure=_env_bool("ARA_API_INSECURE"),
            ca_bundle=settings.env_str("ARA_API_CA_BUNDLE"),
            timeout=_number("ARA_API_TIMEOUT", 30.0),
            spool_dir=default_spool_dir(),
            concurrency=int(_number("ARA_SPOOL_CONCURRENCY", 4)),
            window=int(_number("ARA_SPOOL_WINDOW", 16)),
            max_inflight=int(_number("ARA_SPOOL_MAX_INFLIGHT", 64)),
            checkpoint_every=int(_number("ARA_SPOOL_CHECKPOINT_EVERY", 100)),
            max_backoff=_number("ARA_SPOOL_MAX_BACKOFF", 30.0),
        )

    def check(self) -> None:
        if settings.url_has_credentials(self.server):
            # Refused, not used: a URL is printed (retry commands, errors, logs, status) and seen
            # in argv; a credential goes by environment or file only, under one auth rule.
            raise ConfigError(
                f"ARA_API_SERVER (or --server) {redact_url(self.server)!r} carries credentials in the URL "
                "(user:password@); they are refused so that they are never printed or logged: pass them as "
                "ARA_API_USERNAME and ARA_API_PASSWORD (or ARA_API_PASSWORD_FILE, or a systemd credential)")
        try:
            parts = urlsplit(self.server)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ConfigError(f"ARA_API_SERVER={redact_url(self.server)!r} is not an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"ARA_API_SERVER={redact_url(self.server)!r} is not an http(s) URL")
        self.server = self.server.rstrip("/")
        if self.password and not self.username:
            raise ConfigError("ARA_API_PASSWORD is set but ARA_API_USERNAME is not")
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise ConfigError(f"ARA_API_CA_BUNDLE={self.ca_bundle!r}: no such file")

    @property
    def auth_mode(self) -> str:
        if self.token:
            return "bearer"
        if self.username:
            return "basic"
        return "none"

    @property
    def display_server(self) -> str:
        return redact_url(self.server)

    @property
    def destination(self) -> str:
        """Which Ara a checkpoint belongs to: the API URL, normalised (scheme and host lower-case,
        default port dropped, no credentials), so that one server has one name."""
        return destination(self.server)


def destination(server: str) -> str:
    parts = urlsplit(server.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port and port != {"http": 80, "https": 443}.get(scheme):
        host += f":{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/") + "/api/v1", "", ""))
