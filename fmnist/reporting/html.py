"""The HTML of fmnist's pages (the run report, the label audit): one stylesheet, and pages that
are each one self-contained file (images embedded as data: URIs, no scripts, no network)
that opens from disk and prints cleanly.

Escaping happens here and only here: every helper escapes the text it is given, and inserts
what another helper built (an :class:`Html`) as it is. A caller never escapes and never
writes a tag, so no page can show markup by mistake or miss an escape.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from typing import Any

STYLESHEET = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1040px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
.sub { color: #666; margin-top: 0; }
nav ol { columns: 2; padding-left: 1.3rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .6rem 0; }
th, td { padding: .22rem .65rem; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { background: #f4f4f4; }
th:first-child, td:first-child, .text { text-align: left; }
img { max-width: 100%; height: auto; }
figure { margin: .6rem 0; }
figcaption, .note { color: #555; font-size: .9rem; }
.bad { color: #b00020; font-weight: 600; }
.good { color: #1b5e20; font-weight: 600; }
pre { background: #f6f6f6; padding: .8rem; overflow: auto; font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  nav { display: none; }
  h2 { break-after: avoid; }
  figure, table, tr { break-inside: avoid; }
  pre { white-space: pre-wrap; background: none; border: 1px solid #ccc; }
  a { color: inherit; text-decoration: none; }
}
"""


class Html(str):
    """Markup built by this module: inserted as it is, where any other value is escaped."""


def escape(x: Any) -> Html:
    """``x`` as markup: an :class:`Html` unchanged, anything else as escaped text."""
    return x if isinstance(x, Html) else Html(html.escape(str(x)))


def join(*parts: Any) -> Html:
    """Text and markup one after the other, as one piece of markup."""
    return Html("".join(escape(p) for p in parts))


def tag(name: str, *content: Any, cls: str | None = None, **attrs: Any) -> Html:
    """``<name ...>content</name>``; ``cls`` is the class attribute, a None attribute is left out."""
    return Html(f"<{name}{_attributes(cls=cls, **attrs)}>{join(*content)}</{name}>")


def _attributes(**attrs: Any) -> str:
    names = {"cls": "class"}
    return "".join(f' {names.get(k, k)}="{escape(v)}"' for k, v in attrs.items() if v is not None)


def code(x: Any) -> Html:
    return tag("code", x)


def strong(x: Any) -> Html:
    return tag("b", x)


def span(x: Any, cls: str) -> Html:
    return tag("span", x, cls=cls)


def paragraph(*content: Any, cls: str | None = None) -> Html:
    return tag("p", *content, cls=cls)


def note(*content: Any) -> Html:
    """A paragraph in grey: what a reader needs to read a table or figure, or why it is missing."""
    return paragraph(*content, cls="note")


def preformatted(text: str) -> Html:
    return tag("pre", text)


def image(png: bytes, alt: str) -> Html:
    """A PNG embedded in the page, so the page needs no file beside it."""
    data = base64.b64encode(png).decode("ascii")
    return Html(f"<img{_attributes(alt=alt, src=f'data:image/png;base64,{data}')}>")


def figure(png: bytes, alt: str, caption: Any, saved_as: str | None = None) -> Html:
    """An embedded PNG with its caption, naming the file beside the page that holds it too."""
    if saved_as:
        caption = join(caption, " (also saved as ", code(saved_as), ")")
    return tag("figure", image(png, alt), tag("figcaption", caption))


def table(header: Iterable[Any], rows: Iterable[Iterable[Any]], text_cols: tuple[int, ...] = ()) -> Html:
    """Numbers right-aligned; the first column and those in ``text_cols`` are text, left-aligned."""

    def cell(name: str, j: int, content: Any) -> Html:
        return tag(name, content, cls="text" if j in text_cols else None)

    head = tag("tr", *(cell("th", j, x) for j, x in enumerate(header)))
    body = (tag("tr", *(cell("td", j, x) for j, x in enumerate(row))) for row in rows)
    return tag("table", tag("thead", head), tag("tbody", *body))


def section(sid: str, title: str, *body: Any) -> Html:
    """A titled part of the page, with an ``id`` that :func:`contents` links to."""
    return tag("section", tag("h2", title), *body, id=sid)


def contents(sections: dict[str, str]) -> Html:
    """The numbered table of contents: section id to title (hidden when printed)."""
    return tag("nav", tag("ol", *(tag("li", tag("a", title, href=f"#{sid}")) for sid, title in sections.items())))


def page(title: str, *body: Any, subtitle: Any = None) -> str:
    """A whole document: ``title`` as its title and first heading, the stylesheet inline."""
    head = join(
        Html('<meta charset="utf-8">'),
        Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        tag("title", title),
        tag("style", Html(STYLESHEET)),
    )
    top = join(tag("h1", title), paragraph(subtitle, cls="sub") if subtitle is not None else "")
    return f"<!DOCTYPE html>\n{tag('html', tag('head', head), tag('body', top, *body), lang='en')}\n"
