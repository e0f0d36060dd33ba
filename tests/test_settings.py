"""Every setting has one home (spool/settings.py, flusher/config.py), one boolean rule, and a row
in the README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ara_spool.flusher.config import FLUSHER_SETTINGS, Config, ConfigError
from ara_spool.spool import settings
from ara_spool.spool.settings import SPOOL_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\bARA_[A-Z_]+\b")


def readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration"):]
    section = section[:section.index("\n## ", 4)]
    return {n for line in section.splitlines() if line.startswith("|") for n in NAME.findall(line.split("|")[1])}


def test_every_setting_read_is_registered_and_in_the_readme():
    registered = set(SPOOL_SETTINGS) | set(FLUSHER_SETTINGS)
    read = set()
    for folder in ("spool", "flusher"):
        for path in (ROOT / folder).glob("*.py"):
            text = path.read_text()
            read |= set(re.findall(r'env_(?:str|bool|number|choice)\(\s*"(ARA_[A-Z_]+)"', text))
            for n in re.findall(r'_secret\(\s*"(ARA_[A-Z_]+)"', text):
                read |= {n, f"{n}_FILE"}
            read |= set(re.findall(r'_number\(\s*"(ARA_[A-Z_]+)"', text))
            read |= set(re.findall(r'_env_bool\(\s*"(ARA_[A-Z_]+)"', text))
            if path.name not in ("settings.py",):
                assert not re.search(r'os\.environ(?:\.get)?[\(\[]\s*"ARA_', text), f"{path}: reads ARA_* itself"
    assert read - registered == set(), "read but not registered"
    assert registered - read == set(), "registered but never read"
    assert registered - readme_table() == set(), "missing from the README's configuration table"
    assert readme_table() - registered == set(), "in the README's table but never read"


@pytest.mark.parametrize("raw,want", [("on", True), ("Yes", True), ("1", True), ("off", False), ("no", False),
                                      ("0", False), (True, True), ("maybe", None)])
def test_one_boolean_rule(raw, want):
    assert settings.parse_bool(raw) is want


def test_a_setting_that_cannot_work_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("ARA_SPOOL_FSYNC", "on")
    assert settings.env_bool("ARA_SPOOL_FSYNC") is True  # was silently off before
    monkeypatch.setenv("ARA_API_INSECURE", "maybe")
    with pytest.raises(ConfigError, match="ARA_API_INSECURE='maybe' is not a boolean"):
        Config.from_env()
    monkeypatch.delenv("ARA_API_INSECURE")
    monkeypatch.setenv("ARA_SPOOL_WINDOW", "0")
    with pytest.raises(ConfigError, match="ARA_SPOOL_WINDOW"):
        Config.from_env()
