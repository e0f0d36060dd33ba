"""Flusher configuration: Ara's own ARA_API_* environment names, files for secrets, flags on top."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ara_spool.spool.paths import default_spool_dir

DEFAULT_SERVER = "http://127.0.0.1:8000"  # as Ara's own http client


class ConfigError(ValueError):
    """A setting that cannot work; the message names the variable."""


def _bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _secret(name: str, cred_name: str) -> str | None:
    """A secret from $NAME, else the file named by $NAME_FILE, else a systemd credential."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path and cred_dir and Path(cred_dir, cred_name).is_file():
        path = str(Path(cred_dir, cred_name))
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return None


def redact_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


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
        cfg = cls(
            server=os.environ.get("ARA_API_SERVER") or DEFAULT_SERVER,
            username=os.environ.get("ARA_API_USERNAME") or None,
            password=_secret("ARA_API_PASSWORD", "ara-api-password"),
            token=_secret("ARA_API_TOKEN", "ara-api-token"),
            insecure=_bool("ARA_API_INSECURE"),
            ca_bundle=os.environ.get("ARA_API_CA_BUNDLE") or None,
            timeout=_number("ARA_API_TIMEOUT", 30.0),
            spool_dir=default_spool_dir(),
            concurrency=int(_number("ARA_SPOOL_CONCURRENCY", 4)),
            window=int(_number("ARA_SPOOL_WINDOW", 16)),
            max_inflight=int(_number("ARA_SPOOL_MAX_INFLIGHT", 64)),
            checkpoint_every=int(_number("ARA_SPOOL_CHECKPOINT_EVERY", 100)),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        parts = urlsplit(self.server)
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
