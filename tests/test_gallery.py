"""``cometgen gallery``: rendered in real headless Chromium (Debian's ``chromium``).

In CI (``CI`` set) a missing browser fails these tests, never skips them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _mock_run import cli, latest, make_run
from PIL import Image


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "chromium not found: apt-get install -y chromium (as .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={page.parent}/.profile",
           "--window-size=1280,1000", *args, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


class Dom(HTMLParser):
    """Counts what the test checks in the DOM Chromium serialised after loading."""

    def __init__(self) -> None:
        super().__init__()
        self.thumbs = self.failure_rows = self.scripts = 0
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "figure" and "thumb" in classes:
            self.thumbs += 1
        elif tag == "tr" and "failure" in classes:
            self.failure_rows += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def dom_of(page: Path) -> Dom:
    dom = Dom()
    dom.feed(browse(page, "--dump-dom").stdout)
    return dom


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


def test_gallery_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    proc = cli("gallery", str(run_dir), "-o", str(tmp_path / "g"), "--per-page", "12")
    assert proc.returncode == 0, proc.stderr
    recs = latest(run_dir).values()
    done = [r for r in recs if r["status"] == "done"]
    failed = [r for r in recs if r["status"] != "done"]
    assert len(done) == 20 and {r["status"] for r in failed} == {"blocked", "no_image"}

    first, second = dom_of(tmp_path / "g" / "index.html"), dom_of(tmp_path / "g" / "page-2.html")
    assert (first.thumbs, second.thumbs) == (12, 8)  # one thumbnail per done image
    assert first.scripts == 0  # "<script>" in prompts stayed text
    text = "".join(first.text)
    assert "<script>alert(0)</script> a cat & a dog #0" in text
    assert "cost per accepted image" in text and "p99" in text
    for src in first.images:  # Pillow thumbnails next to the pages
        assert src.startswith("thumbs/") and (tmp_path / "g" / src).is_file()

    failures = dom_of(tmp_path / "g" / "failures.html")
    assert failures.failure_rows == len(failed) and failures.scripts == 0
    ftext = "".join(failures.text)
    assert "PROHIBITED_CONTENT" in ftext and "NO_IMAGE" in ftext

    shot = tmp_path / "shot.png"
    browse(tmp_path / "g" / "index.html", f"--screenshot={shot}")
    with Image.open(shot) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, charts and images, not blank
    background = max(colors)[0] / (im.width * im.height)
    assert background < 0.9


def test_gallery_without_thumbnails_shows_originals(run_dir: Path, tmp_path: Path) -> None:
    proc = cli("gallery", str(run_dir), "-o", str(tmp_path / "g"), "--no-thumbnails")
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "g" / "index.html").read_text()
    dom = Dom()
    dom.feed(html)
    assert dom.thumbs == 20 and not (tmp_path / "g" / "thumbs").exists()
    for src in dom.images:
        assert (tmp_path / "g" / src).resolve().is_relative_to(run_dir.resolve() / "images")
    assert 'loading="lazy"' in html and "&lt;script&gt;" in html and "<script>" not in html


def test_gallery_of_a_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli("gallery", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no manifest.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr
