"""The command line documents itself: `--version`, each command's `--help` with its exit codes and
the environment it reads, and the README's command reference agreeing with the parser, option by
option, for every command the parser has (a new command is covered without touching this file)."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys

import pytest
from ara_spool.flusher.cli import build_parser

from tests.conftest import ROOT

OPTION = re.compile(r"(?<![\w-])(-{1,2}[a-z][a-z-]*)(?: ([A-Z]+|[a-z]+(?:\|[a-z]+)+))?")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], capture_output=True, text=True)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def documented(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction | argparse._VersionAction)


def readme_reference() -> dict[str | None, str]:
    """The README's command-reference block: command -> its synopsis (continuation lines joined);
    None -> the lines for the program itself (global options)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The command line"):]
    block = section[section.index("```\n") + 4:]
    block = block[:block.index("```")]
    entries: dict[str | None, str] = {}
    current: str | None = None
    for line in block.splitlines():
        if line.startswith("ara-spool"):
            words = [w for w in line.split()[1:] if not w.startswith(("-", "["))]
            current = words[0] if words and words[0] != "COMMAND" else None
            entries[current] = entries.get(current, "") + " " + line.removeprefix("ara-spool")
        elif line.startswith(" ") and line.strip():
            entries[current] += " " + line.strip()
        else:
            assert not line.strip(), f"README command reference: unexpected line {line!r}"
    return entries


def check_synopsis(where: str, parser: argparse.ArgumentParser, synopsis: str) -> None:
    found = {m.group(1): m.group(2) for m in OPTION.finditer(synopsis)}
    actions = [a for a in parser._actions if a.option_strings and documented(a)]
    known = {s for a in parser._actions if a.option_strings for s in a.option_strings}
    assert set(found) <= known, f"{where}: the README shows {sorted(set(found) - known)}, which --help does not have"
    for a in actions:
        [shown] = [s for s in a.option_strings if s in found] or [None]
        assert shown, f"{where}: {'/'.join(a.option_strings)} is in --help but not in the README"
        if a.nargs == 0:
            assert found[shown] is None, f"{where}: {shown} takes no value, the README gives it {found[shown]}"
        else:
            assert found[shown] == a.metavar, f"{where}: README `{shown} {found[shown]}`, --help `{shown} {a.metavar}`"
            if isinstance(a, argparse._AppendAction):
                want = f"[{shown} {a.metavar}]..."
                assert want in synopsis, f"{where}: {shown} repeats: write {want}"
        bracketed = f"[{shown}" in synopsis
        assert bracketed != a.required, f"{where}: {shown} is {'required' if a.required else 'optional'} in --help"


def test_readme_command_reference_matches_help():
    parser = build_parser()
    commands = subcommands(parser)
    reference = readme_reference()
    assert set(reference) - {None} == set(commands), "README commands differ from the parser's"
    check_synopsis("ara-spool", parser, reference[None])
    for name, sp in commands.items():
        check_synopsis(f"ara-spool {name}", sp, reference[name])


def test_the_comparison_catches_a_wrong_reference():
    """The check above can fail: a README written the old way is refused."""
    flush = subcommands(build_parser())["flush"]
    with pytest.raises(AssertionError, match="repeats"):
        check_synopsis("flush", flush, "[--run ID ...] [--until-end] [--timeout SECONDS] [--no-wait] "
                       "[--concurrency N] [-q] [--follow] [--poll SECONDS] [--max-backoff SECONDS] "
                       "[--retention-days DAYS] [--retention-action delete|archive] [--server URL] "
                       "[--spool-dir DIR] [--insecure] [--ca-bundle FILE] [--api-timeout SECONDS]")
    with pytest.raises(AssertionError, match="not in the README"):
        check_synopsis("flush", flush, "[--run ID]... [--timeout SECONDS] [--no-wait] [--follow]")


def test_version():
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"ara-spool {importlib.metadata.version('ara-spool')}"


def test_each_command_help_lists_exit_codes_and_environment():
    for name, sp in subcommands(build_parser()).items():
        p = cli(name, "--help")
        assert p.returncode == 0, p.stderr
        assert re.search(r"^exit codes:\n  0  ", p.stdout, re.M), f"{name} --help: no exit codes\n{p.stdout}"
        assert "environment (options win over it):" in p.stdout, f"{name} --help: no environment\n{p.stdout}"
        dests = {a.dest for a in sp._actions}
        if "spool_dir" in dests:
            assert "ARA_SPOOL_DIR" in p.stdout, name
        if "server" in dests:  # the auth variables too
            for var in ("ARA_API_SERVER", "ARA_API_USERNAME", "ARA_API_PASSWORD_FILE", "ARA_API_TOKEN_FILE"):
                assert var in p.stdout, (name, var)
    flush = cli("flush", "--help").stdout
    assert all(f"\n  {code}  " in flush for code in range(7))
    assert 'eval "$(ara-spool env)"' in cli("env", "--help").stdout
    top = cli("--help").stdout
    assert "ARA_API_CLIENT=http" in top and "exit codes" in top
