"""Renderers of a :class:`~keytech.tables.model.Table`: Markdown, LaTeX and a standalone HTML page,
and :func:`write_tables` (all three files)."""

from __future__ import annotations

import html
import re
from pathlib import Path

from keytech.tables.model import Table


def to_markdown(t: Table, level: int = 2) -> str:
    ncol = len(t.headers)
    out = [f"{'#' * level} {t.title}", "", "| | " + " | ".join(t.headers) + " |", "|---|" + "---:|" * ncol]
    for r in t.rows:
        if r.kind == "rule":
            continue
        cells = r.cells + [""] * (ncol - len(r.cells))
        out.append(f"| {r.label} | " + " | ".join(cells) + " |")
    out.append("")
    out += [f"_{n}_  " for n in t.notes]
    return "\n".join(out) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(s: str) -> str:
    s = "".join(_TEX.get(c, c) for c in s)
    return s.replace("×", r"$\times$").replace("²", r"$^2$").replace("θ", r"$\theta$").replace("Σ", r"$\Sigma$").replace("—", "---").replace("–", "--")


def _tex_cell(c: str) -> str:
    m = re.match(r"^(.*?)(\*{1,3})$", c)
    if m:
        return f"{tex_escape(m.group(1))}$^{{{m.group(2)}}}$"
    return tex_escape(c)


def to_latex(t: Table) -> str:
    ncol = len(t.headers)
    out = [
        r"\begin{table}[htbp]\centering",
        rf"\caption{{{tex_escape(t.title)}}}",
        r"\begin{tabular}{l" + "c" * ncol + "}",
        r"\toprule",
        " & " + " & ".join(tex_escape(h) for h in t.headers) + r" \\",
        r"\midrule",
    ]
    for r in t.rows:
        if r.kind == "rule":
            out.append(r"\midrule")
            continue
        cells = r.cells + [""] * (ncol - len(r.cells))
        cells = [_tex_cell(c) for c in cells]
        out.append(tex_escape(r.label) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        out.append(r"\par\smallskip\begin{minipage}{0.95\linewidth}\footnotesize " + r" \\ ".join(tex_escape(n) for n in t.notes) + r"\end{minipage}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def to_html(t: Table) -> str:
    ncol = len(t.headers)
    out = [f"<table class='keytech-table'>", f"<caption>{html.escape(t.title)}</caption>", "<thead><tr><th></th>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.headers) + "</tr></thead>", "<tbody>"]
    for r in t.rows:
        if r.kind == "rule":
            out.append(f"<tr class='rule'><td colspan='{ncol + 1}'></td></tr>")
            continue
        cells = r.cells + [""] * (ncol - len(r.cells))
        out.append(f"<tr class='{r.kind}'><th scope='row'>{html.escape(r.label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody>")
    if t.notes:
        out.append(f"<tfoot><tr><td colspan='{ncol + 1}'>" + "<br>".join(html.escape(n) for n in t.notes) + "</td></tr></tfoot>")
    out.append("</table>")
    return "\n".join(out) + "\n"


_CSS = (
    "<style>body{font-family:system-ui,sans-serif;margin:2em}table.keytech-table{border-collapse:collapse;margin:1.5em 0}"
    "caption{font-weight:600;text-align:left;padding-bottom:.4em}th,td{padding:.15em .7em;text-align:center}"
    "th[scope=row]{text-align:left;font-weight:normal}thead th{border-top:2px solid #000;border-bottom:1px solid #000}"
    "tr.se td{color:#444}tr.rule td{border-top:1px solid #999;padding:0}tfoot td{text-align:left;font-size:.85em;border-top:2px solid #000}</style>"
)


def _html_page(title: str, tables: list[Table]) -> str:
    body = "\n".join(to_html(t) for t in tables)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_CSS}</head><body>\n{body}</body></html>\n"


def write_tables(name: str, tables: list[Table], out_dir: Path, footer: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = "\n".join(to_markdown(t) for t in tables) + (f"\n{footer}\n" if footer else "")
    tex = "\n".join(to_latex(t) for t in tables) + (f"% {footer}\n" if footer else "")
    page = _html_page(tables[0].title if tables else name, tables)
    paths = []
    for ext, text in (("md", md), ("tex", tex), ("html", page)):
        p = out_dir / f"{name}.{ext}"
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths
