"""Ara's own web UI, in a real headless Chromium, shows what ara-spool recorded from a real
ansible-playbook run: the playbook page lists the tasks in order, each with its status.

Needs Debian's `chromium` package (`apt-get install chromium`); without it these tests FAIL, unless
ARA_SPOOL_NO_BROWSER=1 is set (then they are skipped). Screenshots are kept in tests/artifacts/browser/.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import urllib.request
import uuid
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from ara_spool.spool import schema

from tests.ansible_run import BIN, PLAYBOOKS, ansible_env
from tests.conftest import ARTIFACTS, ROOT

SHOTS = ARTIFACTS / "browser"
EXAMPLES = ROOT / "examples"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
    "--disable-crash-reporter", "--hide-scrollbars",
]


# -- the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="session")  # first, so a missing browser fails before Ara starts
def chromium() -> str:
    if os.environ.get("ARA_SPOOL_NO_BROWSER") == "1":
        pytest.skip("ARA_SPOOL_NO_BROWSER=1: browser tests of Ara's web UI not run")
    path = os.environ.get("ARA_SPOOL_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is not installed: these tests open Ara's web UI in a real headless browser. "
                    "Install Debian's chromium package (`sudo apt-get install -y chromium`), or set "
                    "ARA_SPOOL_NO_BROWSER=1 to skip them.", pytrace=False)
    return path


def run_chromium(chromium: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """One headless Chromium, with a new empty profile, killed with all its children afterwards."""
    with tempfile.TemporaryDirectory(prefix="ara-spool-chromium-") as profile:
        env = {**os.environ, "HOME": profile}  # nothing written to the real home
        proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"chromium {' '.join(args)} did not finish in {timeout}s: {err[-2000:]}")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # renderer/zygote children that outlive the browser
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def dump_dom(chromium: str, url: str) -> str:
    proc = run_chromium(chromium, "--dump-dom", url)
    assert proc.returncode == 0 and "</html>" in proc.stdout, f"chromium --dump-dom {url}: {proc.stderr[-2000:]}"
    return proc.stdout


def screenshot(chromium: str, url: str, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    path.unlink(missing_ok=True)
    proc = run_chromium(chromium, f"--screenshot={path}", "--window-size=1400,2000", url)
    assert proc.returncode == 0 and path.exists(), f"chromium --screenshot {url}: {proc.stderr[-2000:]}"
    return path


def png_check(path: Path) -> tuple[int, int]:
    """Width and height of a PNG; asserts it is not one flat colour (a blank or error page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(set(raw[:: max(1, len(raw) // 20000)])) > 16, f"{path} looks blank"
    return width, height


# -- reading the rendered DOM (stdlib html.parser) ---------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join(" ".join(parts).split())

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
                and all(n.attrs.get(k) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag or '*'} class={cls} {attrs}> in the page"
        return found[0]


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):  # tolerate a stray end tag
            if self.stack[i].tag == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


@dataclass
class Row:
    result_id: int
    status: str
    host: str
    action: str
    task: str


def result_rows(doc: Node) -> list[Row]:
    """The playbook page's "Task results" table, top to bottom (Ara lists the newest first)."""
    table = doc.find("table", id="results")
    header = [th.text for th in table.find("thead").find_all("th")]
    col = {name: header.index(name) for name in ("Report", "Status", "Host", "Action", "Task")}
    rows = []
    for tr in table.find("tbody").find_all("tr"):
        cells = [td for td in tr.children if isinstance(td, Node) and td.tag == "td"]
        report = cells[col["Report"]].find("a").attrs["href"]  # /results/<id>.html
        rows.append(Row(int(report.rsplit("/", 1)[1].removesuffix(".html")), cells[col["Status"]].text,
                        cells[col["Host"]].text, cells[col["Action"]].text, cells[col["Task"]].text))
    return rows


def ui_status(result: dict) -> str:
    """The badge Ara's UI shows for a result from its API."""
    if result["status"] == "failed" and result["ignore_errors"]:
        return "IGNORED"
    if result["status"] == "ok" and result["changed"]:
        return "CHANGED"
    return result["status"].upper()


# -- recording real runs ----------------------------------------------------------------------
def record(tmp_path, spool_dir, ara_server, ara, playbook: Path, inventory: Path) -> tuple[str, dict]:
    run_id = f"browser-{uuid.uuid4()}"
    env = ansible_env(tmp_path, spool_dir, ara_server.url)
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook),
           "-e", "ara_enabled=true", "-e", f"ara_run_id={run_id}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_id, ara.playbook_for(run_id)


def check_page(chromium, ara_server, ara, pb: dict, run_id: str, shot_name: str) -> tuple[Node, list[Row]]:
    """What every recorded run's page must show, checked against Ara's API."""
    url = f"{ara_server.url}/playbooks/{pb['id']}.html"
    doc = parse(dump_dom(chromium, url))
    title = doc.find("title").text
    assert f"Playbook #{pb['id']}" in title and Path(pb["path"]).name in title, title
    badge = doc.find("a", cls="ara-playbook-status-badge")
    assert badge.attrs["href"].endswith("status=completed"), badge.attrs
    labels = {span.text for span in doc.find_all("span", cls="ara-label")}
    assert f"run_id:{run_id}" in labels, labels
    # Ara's static files are served (whitenoise, by gunicorn): the page is styled and its JS ran.
    for link in doc.find_all("link", rel="stylesheet"):
        with urllib.request.urlopen(ara_server.url + link.attrs["href"], timeout=10) as resp:
            assert resp.status == 200 and "css" in resp.headers["Content-Type"], link.attrs["href"]
    assert any("data-bs-original-title" in n.attrs for n in doc.iter()), "Ara's JavaScript did not run"

    rows = result_rows(doc)
    api = {r["id"]: r for r in ara.results(pb["id"])}
    # Every result Ara holds for the run is on the page, once, with the status its API gives.
    assert sorted(r.result_id for r in rows) == sorted(api), "the page and the API list different results"
    for row in rows:
        assert row.status == ui_status(api[row.result_id]), (row, api[row.result_id])
    # Newest first, by the real start times ara-spool sent (not by when they were shipped).
    started = [schema.parse_time(api[r.result_id]["started"]) for r in rows]
    assert started == sorted(started, reverse=True), "the page is not ordered by the tasks' start times"

    path = screenshot(chromium, url, shot_name)
    assert png_check(path) == (1400, 2000)
    return doc, rows


def per_host(rows: list[Row], *, skip_action: str = "ara_spool_checkpoint") -> dict[str, list[tuple[str, str]]]:
    """Chronological (task, status) per host, without the role's own checkpoint tasks."""
    out: dict[str, list[tuple[str, str]]] = {}
    for row in reversed(rows):
        if not row.action.endswith(skip_action):
            out.setdefault(row.host, []).append((row.task, row.status))
    return out


# -- the tests --------------------------------------------------------------------------------
def test_playbook_page_lists_the_recorded_tasks_in_order_with_their_statuses(
        chromium, tmp_path, spool_dir, ara_server, ara):
    run_id, pb = record(tmp_path, spool_dir, ara_server, ara, PLAYBOOKS / "multi_play.yml",
                        PLAYBOOKS / "inventory.ini")
    _, rows = check_page(chromium, ara_server, ara, pb, run_id, "multi_play.png")
    web = [("greet", "OK"), ("change something", "CHANGED"), ("fail but ignore", "IGNORED")]
    after = [("loop items", "OK"), ("delegated to db1", "OK"), ("restart app", "OK"), ("final", "OK")]
    seen = per_host(rows)
    assert seen["web1"] == [*web, ("only on web2", "SKIPPED"), ("break on web3", "SKIPPED"), *after]
    assert seen["web2"] == [*web, ("only on web2", "OK"), ("break on web3", "SKIPPED"), *after]
    assert seen["web3"] == [*web, ("only on web2", "SKIPPED"), ("break on web3", "FAILED"), ("rescued", "OK"),
                            *after]
    assert seen["db1"] == [("db check", "OK"), ("final", "OK")]
    actions = {row.task: row.action for row in rows}
    assert actions["change something"] == "ansible.builtin.command" and actions["greet"] == "ansible.builtin.debug"


def test_example_playbook_page_shows_callback_results_and_explicit_events(
        chromium, tmp_path, spool_dir, ara_server, ara):
    run_id, pb = record(tmp_path, spool_dir, ara_server, ara,
                        EXAMPLES / "github_collection_flow.yml", EXAMPLES / "inventory.ini")
    doc, rows = check_page(chromium, ara_server, ara, pb, run_id, "github_collection_flow.png")
    assert pb["name"] == "github collection flow"  # ara_playbook_name
    labels = {span.text for span in doc.find_all("span", cls="ara-label")}
    assert {"branch:main", "commit:3f9c2d1", "repository:example-org/widgets"} <= labels, labels
    seen = per_host(rows)
    # Explicit events from ara_spool_event, on the host they name, with their own status. (Each
    # starts `duration` before it was spooled, so their order among themselves may vary.)
    assert sorted(seen["github.com"]) == [("pr_status_check #101", "OK"), ("pr_status_check #102", "OK"),
                                          ("pr_status_check #103", "FAILED")]
    assert seen["localhost"] == [
        ("checkout example-org/widgets@main", "OK"),
        ("make a work directory", "CHANGED"),
        ("collect open pull requests", "CHANGED"),
        ("lint commit messages (advisory)", "IGNORED"),  # a failure: it never notifies, the callback has it
        ("query the checks of each pull request", "OK"),
        ("pr_status_check", "OK"),                       # the ara_spool_event task's own result
        ("collect reviews", "CHANGED"),
        ("pr_review_summary", "OK"),                     # the seed's set_fact + notify pattern, one per payload
        ("decide what can merge", "CHANGED"),
        ("pr_merge_decision", "OK"),
        ("write the report", "CHANGED"),
        ("ship what we have to Ara now", "CHANGED"),
        ("clean up the work directory", "CHANGED"),
    ]
    explicit = {row.task: row.action for row in rows if row.host == "github.com" or row.task.startswith("pr_")}
    assert set(explicit.values()) == {"ara_spool_event"}, explicit


def test_missing_chromium_fails_with_an_install_hint():
    """Without Chromium the browser tests fail (an error at setup, not a skip) and say what to install."""
    env = {k: v for k, v in os.environ.items() if k not in ("ARA_SPOOL_NO_BROWSER", "ARA_SPOOL_CHROMIUM")}
    env["PATH"] = str(BIN)  # no /usr/bin: no chromium
    proc = subprocess.run([str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           f"{__file__}::test_playbook_page_lists_the_recorded_tasks_in_order_with_their_statuses"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "apt-get install -y chromium" in proc.stdout and "1 error" in proc.stdout, proc.stdout[-3000:]
    env["ARA_SPOOL_NO_BROWSER"] = "1"
    proc = subprocess.run([str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           f"{__file__}::test_playbook_page_lists_the_recorded_tasks_in_order_with_their_statuses"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout and "ARA_SPOOL_NO_BROWSER=1" in proc.stdout, \
        proc.stdout[-3000:]

