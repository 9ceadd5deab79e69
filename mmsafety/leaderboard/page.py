"""The leaderboard's HTML page: one self-contained file that works offline (inline CSS, images as
data URIs, one small inline script allowed by hash in its Content-Security-Policy, no CDN).

Every table is sortable (click a header; `leaderboard.html#sort=NAME` sorts by the column NAME on
load), rows of a section's groups (Section.group_by) sit under a group heading, a cell's hover text
(Section.hover) shows on hovering it, and the sample browser folds each row's samples. The layout is
made to fit a 1300-px window: long text wraps instead of widening its table. Every text from data is
escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re

from mmsafety.leaderboard.blocks import Block
from mmsafety.leaderboard.overview import about, headlines, what_ran
from mmsafety.leaderboard.sample_browser import browser_html, data_uri, row_views, thumbnail
from mmsafety.workload import WORKLOADS

TABLE_THUMB = 48
LONG_TEXT = 16  # cells of more characters than this may break inside a word to fit the window
# Sorts tables by a clicked header (numbers by value, empty cells last, each group's rows in place);
# `#sort=NAME` sorts by a column on load and `#open-all` unfolds every sample list. On load it also
# records into data attributes what a headless browser test reads (tests/test_leaderboard*.py): the
# tables and decoded images, tables with a column that has no header, and every element that reaches
# past the window's right edge.
SCRIPT = r"""(function(){
function key(td){var v=td.getAttribute('data-sort');if(v===null)v=td.textContent.trim();
 if(v==='')return[2,''];var n=parseFloat(v);return isNaN(n)?[1,v.toLowerCase()]:[0,n];}
function sortBy(table,i,dir){table.querySelectorAll('tbody').forEach(function(tb){
 var rows=Array.prototype.filter.call(tb.rows,function(r){return !r.classList.contains('group');});
 rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);if(x[0]!==y[0])return x[0]-y[0];
  return dir*(x[1]<y[1]?-1:x[1]>y[1]?1:0);});
 rows.forEach(function(r){tb.appendChild(r);});});}
function click(table,th,i,dir){table.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
 th.setAttribute('aria-sort',dir>0?'ascending':'descending');sortBy(table,i,dir);}
document.querySelectorAll('table.sortable').forEach(function(table){
 table.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
  click(table,th,i,th.getAttribute('aria-sort')==='descending'?1:-1);});});});
function applyHash(){var hash=decodeURIComponent(location.hash.slice(1));
 if(hash==='open-all')document.querySelectorAll('details').forEach(function(d){d.open=true;});
 if(hash.indexOf('sort=')===0){var name=hash.slice(5);document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('thead th').forEach(function(th,i){if(th.getAttribute('data-column')===name)click(table,th,i,-1);});});}}
window.addEventListener('hashchange',applyHash);
window.addEventListener('load',function(){applyHash();
 var b=document.body,w=document.documentElement.clientWidth,over=[];
 b.dataset.tables=document.querySelectorAll('table').length;
 b.dataset.imagesDecoded=Array.prototype.filter.call(document.images,function(i){return i.complete&&i.naturalWidth>0;}).length;
 b.dataset.images=document.images.length;
 document.querySelectorAll('body *').forEach(function(e){var r=e.getBoundingClientRect();
  if(r.width>0&&r.right>w+0.5)over.push(e.tagName.toLowerCase()+(e.className?'.'+e.className:''));});
 var headless=[];document.querySelectorAll('table').forEach(function(t,ti){var n=0,h=0,empty=0;
  Array.prototype.forEach.call(t.tBodies,function(tb){Array.prototype.forEach.call(tb.rows,function(r){
   if(r.classList.contains('group'))return;var c=0;Array.prototype.forEach.call(r.cells,function(x){c+=x.colSpan;});n=Math.max(n,c);});});
  if(t.tHead&&t.tHead.rows.length)Array.prototype.forEach.call(t.tHead.rows[0].cells,function(x){h+=x.colSpan;if(!x.textContent.trim())empty++;});
  if(h<n||empty)headless.push(ti+':'+h+'/'+n);});
 b.dataset.headerless=headless.length;b.dataset.headerlessTables=headless.join(' ');
 b.dataset.innerWidth=window.innerWidth;
 b.dataset.viewport=w;b.dataset.scrollWidth=document.documentElement.scrollWidth;
 b.dataset.overflowing=over.length;b.dataset.overflow=over.slice(0,8).join(' ');});
})();"""

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h2{margin:1.4em 0 .3em}p.caption{margin:.2em 0;color:#8a5a00}p.about{margin:.2em 0;color:#444;max-width:60em}
section.overview{border:1px solid #ddd;background:#fafafa;padding:.2em 1em .6em}section.overview h2{font-size:1.1em;margin:.6em 0 .2em}
section.overview li{overflow-wrap:anywhere}p.figure-text{max-width:60em;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:12px;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 4px;text-align:right;white-space:nowrap}
td:not(.num){white-space:normal}td.long{overflow-wrap:anywhere}
thead th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:normal}
thead th[aria-sort=ascending]::after{content:" \\25B2"}thead th[aria-sort=descending]::after{content:" \\25BC"}
td:first-child,th:first-child{text-align:left}
td.c-model,td.c-note,td.c-error{white-space:normal;overflow-wrap:anywhere;text-align:left}
td.c-model{max-width:16em;min-width:6em}td.c-images{white-space:normal;min-width:52px}td.c-note{max-width:22em;min-width:6em}
td[title]{text-decoration:underline dotted #999}
tr.group th{background:#e8eef7;text-align:left;font-weight:600}
tr.reported td{color:#666;font-style:italic}tr.partial td{background:#fff8e0}tr.failed td{background:#fde8e8}
td.d-synthetic{color:#8a5a00;font-weight:600}td.d-reported{color:#666}
img{image-rendering:pixelated;margin:0 2px;vertical-align:middle;max-width:100%}
figure{display:inline-block;margin:0 1em 1em 0;max-width:100%}figcaption{max-width:40em}
details.samples{margin:.3em 0}details.samples summary{cursor:pointer;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:8px;margin:.5em 0}
.sample{border:1px solid #ddd;padding:6px;font-size:12px;min-width:0;overflow-wrap:anywhere}
.sample .q,.sample .a{white-space:pre-wrap}.sample .q{color:#555}.sample .a{font-family:monospace}
.sample .v{color:#225}.sample .ex{border-top:1px dotted #ddd;padding:2px 0}.verdict{color:#225}
ul.problems li{overflow-wrap:anywhere}
"""

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _sort_key(value) -> str | None:
    """What a cell sorts by: its first number ("71.70 / 71.28" by 71.70); None sorts by its text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return repr(value)
    found = _NUMBER.match(str(value).strip())
    return found.group(0) if found else None


def _cell(column: str, value, hover: str | None, data: str) -> str:
    text = "" if value is None else str(value)
    classes = f"c-{column}" + (f" d-{data}" if column == "data" else "")
    attrs = ""
    if (key := _sort_key(value)) is not None:
        attrs += f' data-sort="{html.escape(key)}"'
    if key is not None and len(text) <= 2 * LONG_TEXT:
        classes += " num"  # a number stays on one line; text wraps, so a wide board narrows its text columns
    elif len(text) > LONG_TEXT:
        classes += " long"  # a long name may break anywhere; a short word (completed, synthetic) never
    attrs = f' class="{html.escape(re.sub(r"[^a-z0-9_ -]", "", classes.lower()))}"' + attrs
    if hover:
        attrs += f' title="{html.escape(hover)}"'
    return f"<td{attrs}>{html.escape(text)}</td>"


def _row_thumbs(block: Block, row) -> str | None:
    if block.section.images is None:
        return None
    tags = [f'<img alt="{html.escape(alt)}" title="{html.escape(alt)}" src="{uri}">'
            for alt, path in block.section.images(row) if (uri := thumbnail(path, TABLE_THUMB))]
    return "".join(tags)


def table_html(block: Block) -> str:
    columns = block.columns
    with_thumbs = block.section.images is not None
    # A header may break after an underscore (clean_<wbr>baseline): narrow columns, not a wide table.
    head = "".join(f'<th data-column="{html.escape(c)}">{html.escape(c).replace("_", "_<wbr>")}</th>' for c in columns)
    head += '<th data-column="thumbnails">thumbnails</th>' if with_thumbs else ""  # not "images", a count's column
    width = len(columns) + with_thumbs
    groups: dict[tuple, list[str]] = {}
    for row, cells in zip(block.rows, block.table):
        hover = block.section.hover(row) if block.section.hover else {}
        tds = "".join(_cell(c, cells.get(c), hover.get(c), str(cells.get("data", ""))) for c in columns)
        if with_thumbs:
            tds += f'<td class="c-images">{_row_thumbs(block, row)}</td>'
        group = tuple(cells.get(g) for g in block.section.group_by)
        groups.setdefault(group, []).append(f'<tr class="{html.escape(row.status)}">{tds}</tr>')
    bodies = []
    for group, trs in groups.items():
        heading = " · ".join(f"{g} {'' if v is None else v}" for g, v in zip(block.section.group_by, group))
        head_row = f'<tr class="group"><th colspan="{width}">{html.escape(heading)}</th></tr>' if heading else ""
        bodies.append(f"<tbody>{head_row}{''.join(trs)}</tbody>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead>{"".join(bodies)}</table>'


def pivot_html(pivot) -> str:
    """A derived view (Section.pivots) as a plain table: every header and cell escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in pivot.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in pivot.columns) + "</tr>" for r in pivot.rows)
    return f'<table class="pivot"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _browser(block: Block) -> str:
    workload = block.rows[0].workload if block.rows else None
    key_fields = tuple(WORKLOADS.get(workload).sample_key) if workload in WORKLOADS else ()
    parts = []
    for row, cells in zip(block.rows, block.table):
        views = row_views(block.section, row, key_fields)
        if not views:
            continue
        label = ", ".join(str(cells.get(c)) for c in block.columns[:6] if cells.get(c) not in (None, ""))
        parts.append(browser_html(block.title, label, views))
    return "".join(parts)


def to_html(blocks: list[Block], figures: dict, problems: list[str]) -> str:
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width">',
        "<title>mmsafety leaderboard</title>", f"<style>{STYLE}</style>", "</head><body>",
        "<h1>mmsafety leaderboard</h1>",
    ]
    ran, tops = what_ran(blocks), headlines(blocks)
    parts.append('<section class="overview"><h2>What was run</h2><ul class="ran">'
                 + "".join(f"<li>{html.escape(line)}</li>" for line in ran) + "</ul>"
                 + ("<h2>Headline numbers</h2><ul class=\"headlines\">" + "".join(f"<li>{html.escape(line)}</li>" for line in tops)
                    + "</ul>" if tops else "") + "</section>")
    for block in blocks:
        parts.append(f"<h2>{html.escape(block.title)}</h2>")
        parts.append(f'<p class="about">{html.escape(about(block))}</p>')
        if block.caption:
            parts.append(f'<p class="caption">{html.escape(block.caption)}</p>')
        parts.append(table_html(block))
        for pivot in block.pivots:
            parts.append(f"<h3>{html.escape(pivot.title)}</h3>" + pivot_html(pivot))
    for figure in figures.values():
        if figure.png:
            parts.append(f'<figure><img alt="{html.escape(figure.name)}" src="{data_uri(figure.png)}">'
                         f'<figcaption>{html.escape(figure.caption)}</figcaption></figure>')
        else:  # too few points for a plot: the sentence that says what it would show
            parts.append(f'<p class="figure-text" data-figure="{html.escape(figure.name)}">'
                         f'<b>{html.escape(figure.caption)}.</b> {html.escape(figure.text)}</p>')
    browsers = [b for block in blocks if (b := _browser(block))]
    if browsers:
        parts += ["<h2>Samples</h2>", '<p>Each row\'s samples: image, caption or prompt, answer and verdict '
                  '(<a href="#open-all">open all</a>).</p>'] + browsers
    if problems:
        parts += ['<h2>Problems</h2><ul class="problems">'] + [f"<li>{html.escape(p)}</li>" for p in problems] + ["</ul>"]
    parts += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)
