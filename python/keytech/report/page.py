"""HTML assembly of the report: one self-contained page (inline CSS, inline SVG, no network)."""

from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable

# the number formatters are the publication tables' (one set); fmt_int, fmt_r2 and stars_from_p are
# re-exported for the report's other modules
from keytech.tables.format import fmt_n as fmt_int  # noqa: F401
from keytech.tables.format import fmt_num, fmt_r2, is_missing, stars_from_p  # noqa: F401

CSS = """
:root{--ink:#1f2d3d;--muted:#5b6b7b;--rule:#d7dde4;--accent:#1f4e79;--bg:#fbfcfd;--ok:#1e7b34;--bad:#b3261e;--warn:#8a5a00}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;color:var(--ink);background:var(--bg);margin:0}
header.top{background:var(--accent);color:#fff;padding:1.2em 2em}
header.top h1{margin:0;font-size:1.5em}
header.top p{margin:.3em 0 0;opacity:.9}
header.top code{background:rgba(255,255,255,.18);color:#fff}
nav.toc{background:#fff;border-bottom:1px solid var(--rule);padding:.5em 2em;position:sticky;top:0;z-index:5;font-size:.88em}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:1.1em;white-space:nowrap}
main{max-width:1180px;margin:0 auto;padding:0 2em 3em}
section{background:#fff;border:1px solid var(--rule);border-radius:6px;padding:1em 1.5em;margin:1.2em 0}
section h2{margin:.2em 0 .6em;font-size:1.25em;color:var(--accent)}
section h3{margin:1.2em 0 .4em;font-size:1.05em}
.banner{background:#fff4e5;border:2px solid #e0a030;color:#5a3b00;border-radius:6px;padding:.8em 1.2em;margin:1.2em 0;font-weight:500}
.banner strong{color:#8a4b00}
.muted{color:var(--muted)}
.small{font-size:.85em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
caption{text-align:left;font-weight:600;padding:.2em 0 .5em}
th,td{padding:.25em .7em;vertical-align:top}
thead th{border-top:2px solid var(--ink);border-bottom:1px solid var(--ink);text-align:center;font-weight:600}
tbody tr:last-child td,tbody tr:last-child th{border-bottom:2px solid var(--ink)}
tbody th{text-align:left;font-weight:normal}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.txt{text-align:left}
tr.group td{border-top:1px solid var(--rule)}
tr.diag td,tr.diag th{color:var(--muted)}
table.keytech-table td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.keytech-table tr.se td{color:var(--muted)}
table.keytech-table tr.rule td{border-top:1px solid var(--rule);padding:0}
table.keytech-table tfoot td{text-align:left;white-space:normal;font-size:.85em;color:var(--muted);border-top:2px solid var(--ink)}
.se{color:var(--muted)}
.stars{display:inline-block;width:1.7em;text-align:left}
.status{font-size:.8em;padding:.05em .45em;border-radius:3px;white-space:nowrap}
.status.ok{background:#e6f4ea;color:var(--ok)}
.status.not_run,.status.no_term{background:#eef1f4;color:var(--muted)}
.status.error,.status.fail{background:#fde8e7;color:var(--bad)}
.status.warn{background:#fff4e0;color:var(--warn)}
figure{margin:.5em 0 1em}
figure svg{max-width:100%;height:auto;display:block}
figcaption{font-size:.85em;color:var(--muted);margin-top:.3em}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em;margin:.4em 0}
dl.kv dt{color:var(--muted)}
dl.kv dd{margin:0;font-variant-numeric:tabular-nums;word-break:break-all}
code{font-size:.9em;background:#f2f4f7;padding:.05em .3em;border-radius:3px}
.pipeline{display:flex;gap:.6em;align-items:stretch;flex-wrap:wrap;margin:.5em 0}
.stage{flex:1 1 0;min-width:190px;border:1px solid var(--rule);border-radius:6px;padding:.6em .8em;background:#f8fafc}
.stage h4{margin:0 0 .4em;font-size:.95em;color:var(--accent)}
.stage ul{list-style:none;margin:0;padding:0;font-size:.82em}
.stage li{display:flex;justify-content:space-between;gap:.8em;border-bottom:1px dotted var(--rule)}
.stage li span:last-child{font-variant-numeric:tabular-nums}
.arrow{align-self:center;font-size:1.6em;color:var(--muted)}
.notes{font-size:.82em;color:var(--muted)}
.scroll{overflow-x:auto}
@media print{nav.toc{position:static}section{break-inside:avoid}}
"""

SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var figures = document.querySelectorAll('figure svg.figure-svg').length;
  var tables = document.querySelectorAll('main table').length;
  document.body.setAttribute('data-figures', String(figures));
  document.body.setAttribute('data-tables', String(tables));
  document.querySelectorAll('nav.toc a').forEach(function (a) {
    if (!document.querySelector(a.getAttribute('href'))) { a.remove(); }
  });
  document.body.setAttribute('data-report-ready', 'yes');
});
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def coef_html(estimate: Any, se: Any = None, stars: str = "", digits: int = 4) -> str:
    if is_missing(estimate):
        return ""
    out = f"<span class='coef'>{fmt_num(estimate, digits)}</span><span class='stars'>{esc(stars)}</span>"
    if not is_missing(se):
        out += f"<br><span class='se'>({fmt_num(se, digits)})</span><span class='stars'></span>"
    return out


def stars_from_count(n: Any) -> str:
    return "" if is_missing(n) else "*" * int(n)


def status(kind: str, text: str | None = None) -> str:
    labels = {"ok": "ok", "not_run": "not run", "no_term": "term not found", "error": "error", "not_estimable": "not estimable", "fail": "FAILED", "warn": "warning"}
    return f"<span class='status {esc(kind)}'>{esc(text or labels.get(kind, kind))}</span>"


def table(headers: list[str], rows: Iterable[list[tuple[str, str]]], caption: str | None = None,
          table_id: str | None = None, classes: list[str] | None = None, row_classes: list[str] | None = None) -> str:
    """rows: list of (css class, inner HTML) cells. headers are escaped; cells are not (callers escape)."""
    classes = classes or ["txt"] * len(headers)
    out = [f"<table{f' id={chr(39)}{esc(table_id)}{chr(39)}' if table_id else ''}>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th class='{c}'>{esc(h)}</th>" for h, c in zip(headers, classes)) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        rc = f" class='{row_classes[i]}'" if row_classes and row_classes[i] else ""
        out.append(f"<tr{rc}>" + "".join(f"<td class='{c}'>{inner}</td>" for c, inner in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kv(items: list[tuple[str, str]]) -> str:
    return "<dl class='kv'>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def figure(svg: str | None, caption: str, figure_id: str, missing: str) -> str:
    if not svg:
        return f"<p class='muted' id='{esc(figure_id)}-missing'>{esc(missing)}</p>"
    return f"<figure id='{esc(figure_id)}'>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def section(section_id: str, title: str, body: str) -> str:
    return f"<section id='{esc(section_id)}'><h2>{esc(title)}</h2>\n{body}\n</section>"


def page(title: str, subtitle: str, banner: str, nav: list[tuple[str, str]], sections: list[str]) -> str:
    toc = "".join(f"<a href='#{esc(i)}'>{esc(t)}</a>" for i, t in nav)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<header class='top'><h1>{esc(title)}</h1><p>{subtitle}</p></header>"
        f"<nav class='toc' aria-label='sections'>{toc}</nav>\n<main>\n{banner}\n" + "\n".join(sections) +
        f"\n</main><script>{SCRIPT}</script></body></html>\n"
    )


def pretty_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
