"""report.html in a real browser (headless Chromium): every image loads, no console errors, and
the page does not render blank.

Chromium runs twice, without network: once with ``--dump-dom`` on a copy of the page into whose
``<head>`` a probe script is put first (it records ``console.error`` calls, uncaught errors and
failed loads, then writes each image's natural width into the DOM once the page has loaded),
once with ``--screenshot`` on the page itself. Without Chromium the test is skipped, naming the
Debian package to install.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from convgrad.lab.report import write_report
from lab_fixtures import fake_suite

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000"]

PROBE = """<script>
window.__problems = [];
(function () {
  var original = console.error;
  console.error = function () {
    window.__problems.push("console.error: " + Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    window.__problems.push("error: " + (event.message || target.src || target.tagName));
  }, true);
  window.addEventListener("load", function () {
    var images = Array.prototype.map.call(document.images, function (image) {
      return {width: image.naturalWidth, complete: image.complete};
    });
    var out = document.createElement("pre");
    out.id = "probe-result";
    out.textContent = JSON.stringify({images: images, problems: window.__problems});
    document.body.appendChild(out);
  });
})();
</script>"""


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not found: install the Debian package `chromium` "
                "(apt-get install chromium) to run the browser test")


def run_browser(browser: str, tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *arguments],
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-suite")
    fake_suite(root, names=["baseline", "few250-nodropout", "full-nodropout", "digit-sum"])
    _, html_path = write_report(root)
    return html_path


def test_report_loads_every_image_without_console_errors(report_page, tmp_path):
    browser = chromium()
    page = report_page.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    done = run_browser(browser, tmp_path, "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert match, "the probe did not run: " + done.stdout[-500:]
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    expected = page.count("<img ")
    assert len(result["images"]) == expected >= 5
    assert all(image["complete"] and image["width"] > 0 for image in result["images"])
    assert result["problems"] == []


def test_report_screenshot_is_not_blank(report_page, tmp_path):
    import matplotlib.image

    browser = chromium()
    shot = tmp_path / "shot.png"
    done = run_browser(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600",
                       report_page.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, table borders and figures, not one flat colour
    assert (pixels[..., :3] < 0.5).mean() > 0.002  # some dark ink on the white page
