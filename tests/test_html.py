"""The HTML module of the report and the audit page: text is escaped exactly once, in one
place; a page is one self-contained file. The report's own content is in test_report.py."""

from __future__ import annotations

import base64
import re

import numpy as np

from fmnist.reporting import html as h
from fmnist.reporting.plots import image_grid_png
from fmnist.runtime.runs import AUDIT_GRIDS, AUDIT_TABLE, RunFolder
from fmnist.studies.audit import AuditOptions, AuditResult, Suspect, _page

PNG = b"\x89PNG\r\n\x1a\n fake"


def test_text_is_escaped_once_and_markup_goes_in_as_it_is():
    cell = h.table(["a<b", "c"], [['<script>"x"</script>', h.strong("1 & 2")]], text_cols=(1,))
    assert "<script>" not in cell and "&lt;script&gt;&quot;x&quot;&lt;/script&gt;" in cell
    assert "<b>1 &amp; 2</b>" in cell and "a&lt;b" in cell
    assert '<td class="text"><b>' in cell and '<th class="text">c</th>' in cell
    twice = h.paragraph(h.paragraph("a & b"))
    assert twice == "<p><p>a &amp; b</p></p>"  # an Html is never escaped again
    assert h.tag("a", "x", href='#"><script>') == '<a href="#&quot;&gt;&lt;script&gt;">x</a>'


def test_a_figure_embeds_its_png_and_names_its_file():
    fig = h.figure(PNG, 'the "alt"', "Caption <1>.", saved_as="x.png")
    src = re.search(r'<img alt="the &quot;alt&quot;" src="([^"]+)">', fig).group(1)
    assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == PNG
    assert "<figcaption>Caption &lt;1&gt;. (also saved as <code>x.png</code>)</figcaption>" in fig


def test_a_page_is_self_contained_with_one_stylesheet():
    page = h.page("T & T", h.contents({"a": "A"}), h.section("a", "A", h.note("n")), subtitle="sub")
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</html>\n")
    assert "<title>T &amp; T</title>" in page and "<h1>T &amp; T</h1>" in page and '<p class="sub">sub</p>' in page
    assert page.count("<style>") == 1 and h.STYLESHEET in page and "@media print" in page
    assert '<nav><ol><li><a href="#a">A</a></li></ol></nav>' in page and '<section id="a"><h2>A</h2>' in page
    assert "<script" not in page and "<link" not in page


def test_the_audit_page_uses_the_module(tmp_path):
    suspects = {
        "train": [Suspect("train", 7, 0, 6, 0.9, 0.05, 1), Suspect("train", 3, 2, 4, 0.8, 0.1, 2)],
        "test": [],
    }
    result = AuditResult(suspects, {"train": 60_000, "test": 10_000}, 900, 0, AuditOptions(preset="<p>"))
    grid = image_grid_png(np.zeros((2, 28, 28), np.uint8), ["a", "b"])
    page = _page(RunFolder(tmp_path / "run"), result, {"train": grid}, 40)
    assert page.startswith("<!DOCTYPE html>") and h.STYLESHEET in page
    assert "<h1>Label audit: run</h1>" in page and "preset &lt;p&gt;" in page
    assert "suspect, not a proven error" in page
    train = page.split('<section id="train-set">')[1].split("</section>")[0]
    assert train.count("<tr>") == 3 and "T-shirt/top" in train and "Shirt" in train and AUDIT_TABLE in train
    src = re.search(r'<img alt="train suspects" src="data:image/png;base64,([^"]+)"', train).group(1)
    assert base64.b64decode(src) == grid and AUDIT_GRIDS["train"] in train
    test = page.split('<section id="test-set">')[1].split("</section>")[0]
    assert "No image of the test set is flagged." in test and "<img" not in test
