"""report.html as a reader sees it: `write_report` on a small synthetic study, the page opened from disk in headless
Chromium (tests/browser.py), and every image loaded, nothing on the console, nothing fetched from anywhere (the page
is one self-contained file: its images are data: URIs). The checker itself is proven able to fail, on hand-written
pages that are broken in the ways it looks for.

The browser is $GAN_BENCH_CHROMIUM or Chromium on PATH (.ci/start-chromium.sh installs Debian's). Without one these
tests are skipped with the reason — unless GAN_BENCH_REQUIRE_CHROMIUM=1 (CI, when the browser was installed), where
that fails.
"""

from __future__ import annotations

import base64
import io
import os
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bench.report import write_report
from browser import Browser, PageReport, chromium_problem

PROBLEM = chromium_problem()
REQUIRED = os.environ.get("GAN_BENCH_REQUIRE_CHROMIUM") == "1"
# Required (CI installed the browser): the tests run and fail with the reason instead of being skipped.
pytestmark = pytest.mark.skipif(PROBLEM is not None and not REQUIRED, reason=PROBLEM or "")

DATASETS = ["mnist", "fashion_mnist"]
LOSSES = ["ns_gan", "lsgan", "wgan_gp"]
TRIALS = 5
STEPS = [100, 200, 300]
DIVERGED = ("fashion_mnist", "wgan_gp", 3)  # diverged after its second evaluation: no FID at its last row
PROTOCOL = "inception-v3-compat@pt_inception-2015-12-05 resize=bilinear real=train:10000 gen=10000"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's tests (each opens its own page in it); stopped afterwards."""
    if PROBLEM:
        pytest.fail(f"GAN_BENCH_REQUIRE_CHROMIUM=1 but {PROBLEM}")
    with Browser(width=1280) as started:
        yield started


def self_contained_problems(page: PageReport) -> list[str]:
    """What keeps `page` from being a report that works as one file opened from disk: everything the browser saw go
    wrong, no image at all, an image that is not a data: URI, a request for anything but the page itself and data:
    URIs (another file beside it, http(s): the network)."""
    found = page.problems()
    if not page.images:
        found.append("no <img> at all")
    found += [f"image not embedded (not a data: URI): {image['src']}" for image in page.images
              if not image["src"].startswith("data:")]
    found += [f"request for something outside the page: {url}" for url in page.requests
              if url != page.url and not url.startswith("data:")]
    return found


def png_data_uri(title: str = "FID") -> str:
    """A small matplotlib figure as a PNG data: URI, as a report embeds its figures."""
    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.subplots()
    ax.plot([1, 3, 2])
    ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def html(body: str, head: str = "") -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>page</title>{head}</head>\n'
            f"<body>{body}</body></html>\n")


@pytest.fixture
def report_folder(tmp_path):
    """A results folder as a small study leaves it (2 datasets × 3 losses × 5 trials × 3 evaluations, lognormal
    FIDs, one trial diverged), with its report written by `write_report`."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in DATASETS:
        for loss in LOSSES:
            for trial in range(TRIALS):
                final = rng.lognormal(mean=3.0, sigma=0.5)
                lr, beta1 = 10 ** rng.uniform(-5, -3), rng.uniform(0.0, 0.9)
                diverged = (dataset, loss, trial) == DIVERGED
                for i, step in enumerate(STEPS):
                    fid = final * (1.0 + 0.5 * (len(STEPS) - 1 - i))  # falls as training goes on
                    if diverged and i == len(STEPS) - 1:
                        fid = np.nan
                    rows.append({"stage": "search", "dataset": dataset, "loss": loss, "trial": trial, "seed": trial,
                                 "step": step, "status": "diverged" if diverged else "completed", "fid": fid,
                                 "protocol": PROTOCOL, "extractor": "inception-v3-compat", "param_lr": lr,
                                 "param_beta1": beta1, "searched": "lr beta1"})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "study.yaml").write_text("name: browser_test\nobjective: fid\n", encoding="utf-8")
    write_report(tmp_path)
    return tmp_path


def test_the_report_page_loads_whole_and_self_contained_in_a_browser(browser, report_folder):
    page_path = report_folder / "report.html"
    assert page_path.is_file(), f"write_report wrote no report.html (it wrote {sorted(os.listdir(report_folder))})"
    page = browser.open(page_path)
    assert self_contained_problems(page) == []
    assert page.ready_state == "complete"
    assert all(image["naturalWidth"] > 0 and image["src"].startswith("data:") for image in page.images)
    assert not [url for url in page.requests if re.match(r"(?i)(https?|wss?|ftp):", url)]


def test_a_good_page_has_no_problems_and_a_full_page_screenshot(browser, tmp_path):
    """The checker passes a page that is fine, images below the fold (one lazy) included, and screenshots all of it."""
    figure = png_data_uri()
    page_path = tmp_path / "good.html"
    page_path.write_text(html(f'<h1>Good</h1><img src="{figure}" alt="top"><div style="height: 3000px"></div>'
                              f'<img src="{figure}" alt="bottom" loading="lazy">'), encoding="utf-8")
    page = browser.open(page_path)
    assert self_contained_problems(page) == []
    assert [(image["alt"], image["naturalWidth"], image["naturalHeight"]) for image in page.images] == [
        ("top", 320, 240), ("bottom", 320, 240)]
    shot = browser.screenshot(tmp_path / "good.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(shot[16:20], "big"), int.from_bytes(shot[20:24], "big")
    assert width == 1280 and height > 3000  # the whole page, not the 900-pixel viewport


def test_the_checker_reports_a_broken_image_and_a_console_error(browser, tmp_path):
    """So the report's test is not one that cannot fail: a data: image that does not decode and a console.error."""
    page_path = tmp_path / "bad.html"
    page_path.write_text(html(f'<img src="{png_data_uri()}" alt="fine">'
                              '<img src="data:image/png;base64,iVBORw0KGgoAAAA" alt="broken">'
                              '<script>console.error("x")</script>'), encoding="utf-8")
    page = browser.open(page_path)
    assert page.console_errors == ["x"]
    assert [image["alt"] for image in page.broken_images] == ["broken"]
    assert page.problems() == ["console error: x",
                               "broken image (naturalWidth 0): data:image/png;base64,iVBORw0KGgoAAAA"]
    assert self_contained_problems(page) == page.problems()


def test_the_checker_reports_what_is_not_in_the_file_and_what_throws(browser, tmp_path):
    """A figure beside the page (it loads from disk, but the page is not one file), a web font and an image from the
    network (the page is opened offline: they fail, and they are requests outside the page either way) and an
    uncaught exception."""
    figure = png_data_uri()
    (tmp_path / "figure.png").write_bytes(base64.b64decode(figure.split(",", 1)[1]))
    page_path = tmp_path / "outside.html"
    page_path.write_text(html('<img src="figure.png" alt="beside"><img src="https://example.com/fid.png" alt="web">'
                              '<script>null.x</script>',
                              head='<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'),
                         encoding="utf-8")
    page = browser.open(page_path)
    assert [image["alt"] for image in page.broken_images] == ["web"]  # the file beside it loads
    assert len(page.exceptions) == 1 and "TypeError" in page.exceptions[0]
    assert sorted(failed.rsplit(": ", 1)[0] for failed in page.failed_requests) == [
        "https://example.com/fid.png", "https://fonts.googleapis.com/css?family=Roboto"]
    problems = self_contained_problems(page)
    assert f"image not embedded (not a data: URI): {(tmp_path / 'figure.png').as_uri()}" in problems
    assert "request for something outside the page: https://fonts.googleapis.com/css?family=Roboto" in problems
