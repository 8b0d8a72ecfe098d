"""A tiny document model (headings, text, tables, figures, code) with HTML and Markdown writers.

The report is assembled once as a list of blocks and rendered twice, so the HTML and
Markdown versions always say the same thing. HTML embeds PNGs as data URIs (the file
is self-contained: it can be mailed or attached to a paper review); Markdown links
them by relative path.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str
    kind: str = "p"  # p | note | warn


@dataclass
class Bullets:
    items: list[str]
    kind: str = "p"  # p | warn


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    path: Path  # the PNG (other formats linked beside it)
    caption: str
    others: list[Path] = field(default_factory=list)


@dataclass
class Code:
    text: str


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;font-style:italic;padding:.2em 0}
figure{margin:1em 0 2em}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:.4em .8em}.note{color:#555;font-size:.92em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)


def _frame_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    index_name = frame.index.name
    cols = ([index_name] if index_name else []) + [str(c) for c in frame.columns]
    rows = []
    for idx, row in frame.iterrows():
        rows.append(([str(idx)] if index_name else []) + [_cell(v) for v in row.tolist()])
    return cols, rows


# ---------------------------------------------------------------- HTML


def to_html(title: str, blocks: list, base: Path, embed: bool = True) -> str:
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for b in blocks:
        out.append(_html_block(b, base, embed))
    out.append("</body></html>\n")
    return "\n".join(out)


def _html_block(b, base: Path, embed: bool) -> str:
    esc = html.escape
    if isinstance(b, Heading):
        anchor = "".join(c if c.isalnum() else "-" for c in b.text.lower())
        return f"<h{b.level} id='{anchor}'>{esc(b.text)}</h{b.level}>"
    if isinstance(b, Text):
        cls = f" class='{b.kind}'" if b.kind != "p" else ""
        return f"<p{cls}>{esc(b.text)}</p>"
    if isinstance(b, Bullets):
        cls = f" class='{b.kind}'" if b.kind != "p" else ""
        return f"<ul{cls}>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        cols, rows = _frame_rows(b.frame)
        cap = f"<caption>{esc(b.caption)}</caption>" if b.caption else ""
        head = "".join(f"<th>{esc(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in rows)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Figure):
        if not b.path.exists():
            return f"<p class='warn'>figure missing: {esc(str(b.path))}</p>"
        if embed:
            src = "data:image/png;base64," + base64.b64encode(b.path.read_bytes()).decode("ascii")
        else:
            src = esc(_rel(b.path, base))
        links = " ".join(f"<a href='{esc(_rel(p, base))}'>{esc(p.suffix[1:].upper())}</a>" for p in b.others if p.exists())
        return (f"<figure><img src='{src}' alt='{esc(b.caption)}'><figcaption>{esc(b.caption)}"
                f"{' (' + links + ')' if links else ''}</figcaption></figure>")
    if isinstance(b, Code):
        return f"<pre>{esc(b.text)}</pre>"
    raise TypeError(f"unknown block {type(b).__name__}")


# ---------------------------------------------------------------- Markdown


def to_markdown(title: str, blocks: list, base: Path) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        out.append(_md_block(b, base))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(b, base: Path) -> str:
    if isinstance(b, Heading):
        return f"{'#' * b.level} {b.text}"
    if isinstance(b, Text):
        return {"warn": f"> **Warning:** {b.text}", "note": f"*{b.text}*"}.get(b.kind, b.text)
    if isinstance(b, Bullets):
        prefix = "- **!** " if b.kind == "warn" else "- "
        return "\n".join(prefix + i for i in b.items)
    if isinstance(b, Table):
        cols, rows = _frame_rows(b.frame)
        lines = [f"*{b.caption}*", ""] if b.caption else []
        lines.append("| " + " | ".join(_md_escape(c) for c in cols) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
        lines += ["| " + " | ".join(_md_escape(v) for v in r) + " |" for r in rows]
        return "\n".join(lines)
    if isinstance(b, Figure):
        if not b.path.exists():
            return f"> **Warning:** figure missing: {b.path}"
        links = ", ".join(f"[{p.suffix[1:].upper()}]({_rel(p, base)})" for p in b.others if p.exists())
        return f"![{_md_escape(b.caption)}]({_rel(b.path, base)})\n\n*{b.caption}*" + (f" ({links})" if links else "")
    if isinstance(b, Code):
        return f"```\n{b.text.rstrip()}\n```"
    raise TypeError(f"unknown block {type(b).__name__}")


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
