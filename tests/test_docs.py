"""The documentation site: it builds offline with warnings as errors (executing every
tutorial), every code block on its pages runs, no page of it (every generated page, not a
chosen few) loads anything from outside the site, and the pages with math render in
headless Chromium with the math typeset and no failed or outside requests.

The build runs once per session, in a subprocess, on a copy of ``docs/`` in a temporary
directory (so the checkout stays clean and the tutorials run afresh every time).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
# CI sets this, so that a missing browser fails the render test instead of skipping it
REQUIRE_CHROMIUM = os.environ.get("PYRO_VAE_REQUIRE_CHROMIUM") == "1"
GENERATED = ("_build", "generated", "api/generated", "results/generated", "sg_execution_times.rst")
BUILD_TIMEOUT_S = 1500

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")


def _copy_docs(dest: Path) -> Path:
    """``docs/`` without build outputs, beside a link to ``benchmarks/`` (the results pages)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")

    def skip(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(DOCS).as_posix()
        out = set(ignore(folder, names))
        for name in names:
            path = name if rel == "." else f"{rel}/{name}"
            if path in GENERATED:
                out.add(name)
        return out

    shutil.copytree(DOCS, dest / "docs", ignore=skip)
    (dest / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)
    return dest / "docs"


def _sphinx(source: Path, out: Path, builder: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", builder]
    command += [*extra, str(source), str(out)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=source.parent
    )


@pytest.fixture(scope="session")
def docs_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_docs(tmp_path_factory.mktemp("docs-src"))


@pytest.fixture(scope="session")
def html(docs_source: Path) -> Path:
    """The HTML site, built once with warnings as errors; the build runs every tutorial."""
    out = docs_source.parent / "html"
    done = _sphinx(docs_source, out, "html")
    assert done.returncode == 0, f"sphinx html build failed:\n{done.stdout[-4000:]}\n{done.stderr}"
    return out


def _tutorials() -> list[Path]:
    return sorted((DOCS / "tutorials").glob("tutorial_*.py"))


PAGES = (
    "index",
    "install",
    "overview",
    "command-line",
    "data",
    "components",
    "objectives",
    "reliability",
    "scale-out",
    "architecture",
    "results",
    "api/index",
)


def test_docs_build_without_warnings_and_run_every_tutorial(html: Path) -> None:
    for page in PAGES:
        assert (html / f"{page}.html").is_file(), page
    # sphinx-gallery's execution-times pages load Bootstrap from a CDN: not written at all
    assert not list(html.rglob("sg_execution_times.html"))
    for script in _tutorials():
        page = html / "generated" / "tutorials" / f"{script.stem}.html"
        assert page.is_file(), f"{script.name} has no page"
        text = page.read_text()
        # a figure the build's own run of the script produced (sphinx-gallery's scraper)
        assert f"sphx_glr_{script.stem}_001.png" in text, f"{script.name}: no figure captured"
        assert (html / "_images" / f"sphx_glr_{script.stem}_001.png").is_file()


def test_api_reference_documents_every_public_name_and_component(html: Path) -> None:
    import pyro_vae
    from pyro_vae.components import REGISTRIES

    objects = (html / "objects.inv").read_bytes()
    assert objects  # the inventory exists; the pages are checked by their anchors below
    pages = {p: p.read_text() for p in (html / "api" / "generated").rglob("*.html")}
    anchors = set()
    for text in pages.values():
        anchors.update(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', text))
    for name in pyro_vae.__all__:
        if name.startswith("_"):
            continue
        obj = getattr(pyro_vae, name)
        assert f"{obj.__module__}.{obj.__qualname__}" in anchors, name
    for registry in REGISTRIES.values():
        for entry in registry:
            assert f"{entry.cls.__module__}.{entry.cls.__qualname__}" in anchors, entry.name


def test_results_page_includes_every_benchmark_table(html: Path) -> None:
    tables = sorted((ROOT / "benchmarks").glob("*.md"))
    tables += sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert tables
    pages = list((html / "results" / "generated").glob("*.html"))
    assert len(pages) == len(tables)
    index = (html / "results.html").read_text()
    for md in tables:
        stem = ("results-" if md.parent.name == "results" else "") + md.stem.lower()
        page = html / "results" / "generated" / f"{stem}.html"
        assert f"results/generated/{stem}.html" in index, md
        text = page.read_text()
        for key in ("Command:", "Machine:", "Date:"):
            assert key in text, (md, key)
        if "|---" in md.read_text():
            assert "<table" in text, md  # the markdown table became a table


def _python_blocks_outside_tests(text: str) -> list[str]:
    """``.. code-block:: python`` (or ``.. code:: python``) blocks of an rst page."""
    return re.findall(r"^\s*\.\. (?:code-block|code|sourcecode)::\s*(?:python|py)\b", text, re.M)


def test_every_python_block_on_the_pages_is_a_doctest() -> None:
    """Python on a page is written as ``testcode``/``doctest``, so the doctest build runs it."""
    pages = [p for p in DOCS.rglob("*.rst") if not set(p.relative_to(DOCS).parts) & {"_build"}]
    pages = [p for p in pages if "generated" not in p.relative_to(DOCS).parts]
    assert pages
    for page in pages:
        assert not _python_blocks_outside_tests(page.read_text()), page


def test_doctest_builder_runs_every_code_block(docs_source: Path) -> None:
    out = docs_source.parent / "doctest"
    # the tutorials are executed by the html build; the doctest build only runs the pages
    done = _sphinx(docs_source, out, "doctest", "-D", "sphinx_gallery_conf.plot_gallery=0")
    report = (out / "output.txt").read_text() if (out / "output.txt").exists() else ""
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr}\n{report}"
    expected = sum(
        len(re.findall(r"^\.\. (?:testcode|doctest)::", p.read_text(), re.M))
        for p in DOCS.rglob("*.rst")
        if "generated" not in p.parts and "_build" not in p.parts
    )
    ran = sum(int(n) for n in re.findall(r"^\s*(\d+) tests?\b", report, re.M))
    assert expected > 0 and ran >= expected, report
    assert "0 failures in tests" in report and "0 failures in setup code" in report, report


def test_quickstart_command_line_block_runs(tmp_path: Path) -> None:
    """The bash block of the quick start that starts with ``pyro-vae train`` runs as written."""
    text = (DOCS / "install.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: bash\n\n((?:   .*\n|\n)+)", text)
    block = next(b for b in blocks if b.strip().startswith("pyro-vae train"))
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in (b.strip() for b in block.splitlines()):
        if line:
            done = subprocess.run(
                ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
    assert (tmp_path / "samples.png").is_file()


# -- nothing remote -----------------------------------------------------------------------

# what a browser fetches by itself when it shows a page (links a reader follows are not)
_FETCHED = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "input": ("src",),
}


class _Resources(HTMLParser):
    """Every URL a page makes the browser fetch: scripts, styles, images, frames, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "link" and set(values.get("rel", "").split()) - {
            "next",
            "prev",
            "search",
            "index",
            "author",
            "help",
            "license",
            "canonical",
        }:
            self.urls.append(values.get("href", ""))
        for attr in _FETCHED.get(tag, ()):
            if attr in values:
                self.urls += [part.split()[0] for part in values[attr].split(",") if part.strip()]
        self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", values.get("style", ""))

    def handle_data(self, data: str) -> None:
        pass


def _remote(url: str) -> bool:
    return bool(re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url.strip(), re.I))


def _every_page(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html") if not p.name.startswith("_every_page"))


def test_no_page_refers_to_anything_remote(html: Path) -> None:
    """Every generated page (all of them, not a chosen few) loads only files of the site."""
    pages = _every_page(html)
    assert len(pages) > 20
    found = {}
    for page in pages:
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8"))
        remote = [u for u in parser.urls if _remote(u)]
        if remote:
            found[str(page.relative_to(html))] = remote
    for sheet in html.rglob("*.css"):
        urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", sheet.read_text(errors="replace"))
        urls += re.findall(r"@import\s+['\"]([^'\"]+)", sheet.read_text(errors="replace"))
        remote = [u for u in urls if _remote(u)]
        if remote:
            found[str(sheet.relative_to(html))] = remote
    assert not found, f"pages that load remote resources: {found}"


# -- rendering in headless Chromium --------------------------------------------------------


class _Recorder(http.server.SimpleHTTPRequestHandler):
    """Serves the built site and records every request's path and status."""

    log: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log.append((self.path, int(code)))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(html: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    log: list[tuple[str, int]] = []
    handler = functools.partial(type("H", (_Recorder,), {"log": log}), directory=str(html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    finally:
        httpd.shutdown()
        httpd.server_close()


def _chromium(url: str, work: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={work / 'profile'}",
        f"--log-net-log={work / 'net.json'}",
        "--virtual-time-budget=20000",  # lets MathJax load and typeset before the dump
        "--window-size=1280,1600",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *mode, url], capture_output=True, text=True, timeout=180
    )


class _VisibleText(HTMLParser):
    """The page's text outside scripts, styles, code and MathJax's own output."""

    SKIP = frozenset({"script", "style", "pre", "code", "mjx-container", "noscript", "svg"})

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


def _page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for, from Chromium's net log.

    A request made for the page carries the page's site in its network isolation key;
    Chromium's own background services (update checks and the like) carry none.
    """
    log = json.loads(net_log.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        if names.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in params:
            key = str(params.get("network_isolation_key", ""))
            if "127.0.0.1" in key or "127.0.0.1" in str(params.get("initiator", "")):
                urls.append(params["url"])
    return urls


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        if REQUIRE_CHROMIUM:
            pytest.fail(f"{CHROMIUM} is missing and PYRO_VAE_REQUIRE_CHROMIUM=1")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")


def test_every_page_requests_nothing_outside_the_site_in_chromium(
    html: Path, server: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    """Every generated page, loaded at once by Chromium (one frame each), asks only the
    local server for anything, and every request succeeds: what a script fetches included."""
    _need_chromium()
    base, log = server
    pages = [p.relative_to(html).as_posix() for p in _every_page(html)]
    frames = "\n".join(f'<iframe src="{page}" width="400" height="300"></iframe>' for page in pages)
    harness = html / "_every_page.html"
    icon = '<link rel="icon" href="_static/favicon.svg">'  # else the browser asks /favicon.ico
    harness.write_text(
        f"<!DOCTYPE html><html><head>{icon}</head><body>\n{frames}\n</body></html>\n"
    )
    log.clear()
    done = _chromium(f"{base}/{harness.name}", tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    served = list(log)
    requests = _page_requests(tmp_path / "net.json")
    outside = sorted({u for u in requests if not u.startswith(base + "/")})
    assert not outside, f"requests outside the local site: {outside}"
    failed = [(path, code) for path, code in served if code >= 400]
    assert not failed, f"failed requests: {failed}"
    asked = {path.split("?")[0].split("#")[0].lstrip("/") for path, _ in served}
    missing = [page for page in pages if page not in asked]
    assert not missing, f"pages Chromium never loaded: {missing[:10]}"


def _rendered_pages() -> list[str]:
    pages = ["overview.html", "index.html"]
    pages += [f"generated/tutorials/{p.stem}.html" for p in _tutorials()]
    return pages


@pytest.mark.parametrize("page", _rendered_pages())
def test_page_renders_math_in_chromium_without_failed_requests(
    page: str, html: Path, server: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    _need_chromium()
    base, log = server
    url = f"{base}/{page}"
    log.clear()
    dom = _chromium(url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    served = list(log)
    requests = _page_requests(tmp_path / "net.json")

    # every request the page made went to the local server and succeeded
    outside = [u for u in requests if not u.startswith(base + "/")]
    assert not outside, f"requests outside the local site: {outside}"
    failed = [(path, code) for path, code in served if code >= 400]
    assert not failed, f"failed requests: {failed}"
    assert any("mathjax/tex-chtml.js" in path for path, _ in served)

    # every math element of the static page was typeset by MathJax
    source = (html / page).read_text()
    maths = len(re.findall(r'class="math notranslate nohighlight"', source))
    assert maths > 0, "the page has no math to check"
    typeset = len(re.findall(r"<mjx-container\b", dom.stdout))
    assert typeset >= maths, f"{typeset} typeset of {maths} math elements"
    assert "<mjx-merror" not in dom.stdout, "MathJax reported a TeX error"

    # no raw TeX left in the visible text
    parser = _VisibleText()
    parser.feed(dom.stdout)
    text = "".join(parser.parts)
    for raw in (r"\(", r"\)", r"\[", r"\]", "\\begin{"):
        assert raw not in text, f"raw {raw!r} in the visible text of {page}"
    dollars = re.findall(r"\$[^$\s][^$]*\$", text)
    assert not dollars, f"raw $...$ math in the visible text: {dollars[:3]}"

    # and a picture of it, to look at (kept next to the build)
    png = html.parent / "screenshots" / page.replace("/", "_").replace(".html", ".png")
    png.parent.mkdir(exist_ok=True)
    shot = _chromium(url, tmp_path / "shot", f"--screenshot={png}")
    assert shot.returncode == 0 and png.stat().st_size > 10_000, shot.stderr[-2000:]
