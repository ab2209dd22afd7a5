"""The HTML module of the report and the audit page: text is escaped exactly once, in one
place; a page is one self-contained file. The report's own content is in test_report.py."""

from __future__ import annotations

import base64
import re

from fmnist.reporting import html as h

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
