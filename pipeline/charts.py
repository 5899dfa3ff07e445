"""Charts for the pages a manager reads (the console's precision page, `reid replay-batch`'s chain
summary), drawn on the server by matplotlib as SVG and returned as one `<svg>` element to inline:
no script, no CDN, nothing fetched, so they show on a page whose Content-Security-Policy allows no
inline style and on a file opened from disk.

matplotlib's SVG is made inline-safe here: its `style` attributes become presentation attributes
(an inline style is what a strict CSP blocks), its `<style>`, metadata and comments go, and the ids
it references are prefixed with the chart's own name (two charts on a page must not share one);
the rest of its ids go. Fixed size, font, colours and hash salt: the same data gives the same bytes.
"""

from __future__ import annotations

import io
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from matplotlib import rc_context
from matplotlib.figure import Figure  # a Figure made without pyplot: no GUI backend, no global figure list

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG)
ET.register_namespace("xlink", XLINK)

WIDTH_IN = 7.5  # inches at matplotlib's 72 points each: 540 pt wide
ROW_IN = 0.28  # a horizontal bar's height
COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030", "#319795", "#4a5568")
RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: readable, searchable, and in the browser's own font
    "svg.hashsalt": "retail-reid",  # ids from hashes of the content, not of a random salt
    "text.parse_math": False,  # a lane named "$1 till" is a name, not mathematics
    "font.family": "DejaVu Sans",
    "font.size": 9,
}
# CSS properties matplotlib writes in `style`, each also an SVG presentation attribute of the same name.
PRESENTATION = frozenset(
    {
        "clip-path",
        "fill",
        "fill-opacity",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "opacity",
        "stroke",
        "stroke-dasharray",
        "stroke-dashoffset",
        "stroke-linecap",
        "stroke-linejoin",
        "stroke-miterlimit",
        "stroke-opacity",
        "stroke-width",
        "text-anchor",
    }
)
DROPPED = frozenset({f"{{{SVG}}}metadata", f"{{{SVG}}}style", f"{{{SVG}}}script", f"{{{SVG}}}foreignObject"})
HREFS = (f"{{{XLINK}}}href", "href")
REFERENCE = re.compile(r"url\(#([^)]+)\)")
# matplotlib's settings are global: one chart at a time, so two requests drawing at once neither see
# nor restore each other's (the console serves requests on several threads).
_DRAWING = threading.Lock()


def line_chart(
    name: str, title: str, x: Sequence[str], series: Mapping[str, Sequence[float | None]], y_label: str, y_max: float
) -> str:
    """One line per series over the categories `x` (weeks, days), None where a series has no value;
    the y axis from 0 to `y_max`."""
    if not x or not series:
        raise ValueError(f"chart {name!r}: no data")
    with _DRAWING, rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, 3.2))
        ax = fig.subplots()
        for i, (label, values) in enumerate(series.items()):
            ys = [float("nan") if v is None else v for v in values]
            colour = COLOURS[i % len(COLOURS)]
            ax.plot(range(len(x)), ys, marker="o", color=colour, label=label, clip_on=False)  # a 0 drawn whole
        ax.set_xticks(range(len(x)), list(x), rotation=30 if len(x) > 6 else 0, ha="right" if len(x) > 6 else "center")
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_ylim(0, y_max * 1.05 if y_max > 0 else 1)
        ax.set_ylabel(y_label)
        ax.grid(axis="y", color="#dddddd")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        return _svg(fig, name, title)


def bar_chart(name: str, title: str, labels: Sequence[str], values: Sequence[float], x_label: str) -> str:
    """Horizontal bars, the first label on top, each with its value written at its end."""
    if not labels:
        raise ValueError(f"chart {name!r}: no data")
    with _DRAWING, rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, 0.9 + ROW_IN * len(labels)))
        ax = fig.subplots()
        bars = ax.barh(range(len(labels)), values, height=0.6, color=COLOURS[0])
        ax.bar_label(bars, fmt="%g", padding=3)
        ax.set_yticks(range(len(labels)), list(labels))
        ax.invert_yaxis()
        ax.set_xlim(0, max(max(values), 1e-9) * 1.15)
        ax.set_xlabel(x_label)
        ax.grid(axis="x", color="#dddddd")
        ax.set_axisbelow(True)
        return _svg(fig, name, title)


def _svg(fig: Figure, name: str, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    return inline_svg(buf.getvalue(), name, title)


def inline_svg(document: str, name: str, title: str) -> str:
    """An SVG document as one `<svg>` element to put in an HTML page: no script, style element or
    inline style, its ids prefixed with `name`, titled `title` for screen readers."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ValueError(f"chart name {name!r}: lower-case letters, digits and '-' only")
    root = ET.fromstring(document)  # comments and the doctype are not kept
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in DROPPED:
                parent.remove(child)
    referenced = {m for e in root.iter() for v in e.attrib.values() for m in REFERENCE.findall(v)}
    referenced |= {v[1:] for e in root.iter() for k, v in e.attrib.items() if k in HREFS and v.startswith("#")}
    for e in root.iter():
        for key in [k for k in e.attrib if k.startswith("on") or k in HREFS]:
            value = e.attrib.pop(key)
            if key in HREFS and value.startswith("#"):  # a link to one of the chart's own shapes only
                e.set("href", f"#{name}-{value[1:]}")
        if "id" in e.attrib:
            ident = e.attrib.pop("id")
            if ident in referenced:
                e.set("id", f"{name}-{ident}")
        for key, value in list(e.attrib.items()):
            if "url(#" in value:
                e.set(key, REFERENCE.sub(lambda m: f"url(#{name}-{m.group(1)})", value))
        for prop, value in _declarations(e.attrib.pop("style", "")):
            e.set(prop, REFERENCE.sub(lambda m: f"url(#{name}-{m.group(1)})", value))
    root.set("stroke-linejoin", "round")  # what matplotlib's <style> gave every shape
    root.set("stroke-linecap", "butt")
    root.set("class", "chart")
    root.set("role", "img")
    root.set("aria-labelledby", f"{name}-title")
    heading = ET.Element(f"{{{SVG}}}title", id=f"{name}-title")
    heading.text = title
    root.insert(0, heading)
    return ET.tostring(root, encoding="unicode")


def _declarations(style: str) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in style.split(";"))):
        prop, _, value = (s.strip() for s in part.partition(":"))
        if prop not in PRESENTATION:  # a matplotlib that writes other CSS: the chart would render wrong
            raise ValueError(f"chart style {prop!r} has no SVG presentation attribute")
        out.append((prop, value))
    return out
