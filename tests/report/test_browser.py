"""Open report.html in headless Chromium: the page loads and every figure decodes (naturalWidth > 0)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_helpers import parse

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian: apt-get install -y chromium); .ci/run installs it",
)

PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  var p = document.createElement("pre");
  p.id = "probe";
  p.textContent = "loaded=" + ok + " total=" + imgs.length;
  document.body.appendChild(p);
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--no-first-run",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_page_renders_with_every_image_loaded(smart_report, tmp_path):
    # The report itself has no scripts; a test copy gets a probe that counts the decoded images after "load".
    page = tmp_path / "probe.html"
    page.write_text(smart_report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    match = re.search(r'<pre id="probe">loaded=(\d+) total=(\d+)</pre>', result.stdout)
    assert match, f"probe not found in the DOM; chromium stderr: {result.stderr[-2000:]}"
    expected = len(parse(smart_report).images)
    assert expected == 6 and (int(match[1]), int(match[2])) == (expected, expected)


def test_screenshot_is_not_blank(smart_report, tmp_path):
    shot = tmp_path / "shot.png"
    chromium(
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        "--hide-scrollbars",
        smart_report.as_uri(),
        profile=tmp_path / "profile",
    )
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    # The header bar is dark and the figures add detail: a blank or failed page would be one flat colour.
    assert pixels[:40].mean() < 120 and pixels.std() > 20
