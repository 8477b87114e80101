"""The report page: the sections of :mod:`fairsynth.report.sections` in one HTML file.

Every image is inlined as a ``data:`` URI and the page loads no script, font or stylesheet
from elsewhere, so it opens from disk, offline, and can be mailed as one file. It opens on the
verdict, sized to be read on a 1280 × 800 screen without scrolling; a table of contents links
every section by a stable anchor (``#verdict``, ``#downstream``, ...), and each data figure
links its data file and PNG in ``figures/`` beside the page.
"""

from __future__ import annotations

import time
from pathlib import Path

from fairsynth.io import atomic_write_bytes, atomic_write_text
from fairsynth.report.collect import ReportInputError, StudyOutputs, collect
from fairsynth.report.sections import SECTIONS, Section

#: Where the page goes inside a study's folder.
REPORT_PATH = Path("report") / "index.html"


class ReportError(ValueError):
    """The report cannot be built (a clear, user-facing message naming the file at fault)."""


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f5f7f9}
header{background:#1f3b57;color:#fff;padding:10px 28px}header h1{margin:0;font-size:19px;font-weight:600}
header p{margin:2px 0 0;opacity:.85;font-size:12px}
nav{position:sticky;top:0;z-index:1;padding:6px 28px;background:#e9eef3;border-bottom:1px solid #d3dae2;font-size:13px}
nav strong{margin-right:10px;color:#555;font-weight:600}
nav a{margin-right:14px;color:#1f3b57;text-decoration:none;white-space:nowrap}nav a:hover{text-decoration:underline}
nav a.notrun{color:#8a8f96}
main{padding:4px 28px 40px;max-width:1240px}
section{scroll-margin-top:40px;margin:14px 0;padding:12px 20px;background:#fff;border:1px solid #dfe4ea;border-radius:6px}
h2{font-size:18px;margin:0 0 8px;font-weight:600}h2 a.self{color:#b0b8c2;text-decoration:none;font-weight:400;margin-left:6px;font-size:15px}
p{margin:6px 0;max-width:980px}
section.verdict{border:2px solid #1f3b57}
p.sentence{font-size:15px;line-height:1.45;margin:5px 0;max-width:1160px;padding-left:10px;border-left:4px solid #9fb3c8}
p.sentence.caution{border-left-color:#d9a400}
.notrun{color:#7a4f00;background:#fff4d6;border:1px solid #f0dca0;padding:6px 10px;border-radius:4px;display:inline-block}
.figures{display:flex;flex-wrap:wrap;gap:12px 20px;margin:10px 0}
figure{margin:0;max-width:100%;scroll-margin-top:40px}figure img{display:block;max-width:100%;height:auto;border:1px solid #e1e5ea;background:#fff}
figure img.pixels{image-rendering:pixelated}
figcaption{font-size:12px;color:#555;max-width:760px;margin-top:4px}figcaption a{color:#1f3b57}
.wide{overflow-x:auto;margin:10px 0 16px}
details{margin:6px 0}summary{cursor:pointer;font-size:12.5px;color:#1f3b57}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-size:12px;color:#555;padding:2px 0 4px}
th,td{border:1px solid #dde3ea;padding:3px 8px;text-align:right;vertical-align:top;white-space:nowrap}
table.text-last td:last-child{white-space:normal;min-width:16em;text-align:left;color:#555}
th{background:#eef2f6;font-weight:600}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
code{background:#eef2f6;padding:0 3px;border-radius:3px;font-size:12.5px;word-break:break-all}
ul.notes{margin:6px 0;padding-left:20px;font-size:12px;color:#666;max-width:980px}
footer{color:#777;font-size:12px;padding:0 28px 24px}
</style></head><body>
<header><h1>{{ title }}</h1><p>{{ subtitle }}</p></header>
<nav aria-label="Contents"><strong>Contents</strong>{% for s in sections %}<a href="#{{ s.id }}"{% if not s.ran %} class="notrun"{% endif %}>{{ s.title.split(':')[0] }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}<section id="{{ s.id }}"{% if s.sentences %} class="verdict"{% endif %}><h2>{{ s.title }}<a class="self" href="#{{ s.id }}" aria-label="link to this section">#</a></h2>
{% if not s.ran %}<p class="notrun">{{ s.note }}</p>{% endif %}
{% for v in s.sentences %}<p class="sentence{% if v.key == 'caution' %} caution{% endif %}" id="verdict-{{ v.key }}" data-verdict="{{ v.key }}">{{ v.text }}</p>
{% endfor %}
{% for p in s.paragraphs %}<p>{{ p | safe }}</p>
{% endfor %}
{% if s.notes %}<ul class="notes">{% for n in s.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% if s.figures %}<div class="figures">{% for f in s.figures %}<figure{% if f.id %} id="figure-{{ f.id }}"{% endif %}><img src="{{ f.uri }}" alt="{{ f.alt or f.caption }}"><figcaption>{{ f.caption }}{% if f.files %} <a href="{{ f.files.data }}">data (CSV)</a> · <a href="{{ f.files.image }}">image (PNG)</a>{% endif %}</figcaption></figure>{% endfor %}</div>{% endif %}
{% for t in s.tables %}{% if t.collapsed %}<details><summary>Table: {{ t.caption }}</summary>{% endif %}<div class="wide"><table{% if t.text_last %} class="text-last"{% endif %}><caption>{{ t.caption }}</caption>
<tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table></div>{% if t.collapsed %}</details>{% endif %}
{% endfor %}</section>
{% endfor %}</main>
<footer>Built by <code>fairsynth report</code>. Images are downscaled copies; the study's folder holds the originals. Each figure's data file and PNG are in <code>figures/</code> beside this page.</footer>
</body></html>
"""


def render_sections(sections: list[Section], study: StudyOutputs) -> str:
    """The page's HTML for its sections."""
    import jinja2

    name = (study.recipe or {}).get("name") or study.workdir.name
    environment = jinja2.Environment(autoescape=True, trim_blocks=True)
    return environment.from_string(TEMPLATE).render(
        title=f"fairsynth study: {name}",
        subtitle=(f"{study.workdir} · built {time.strftime('%Y-%m-%d %H:%M')} · every number below is read from "
                  "the study's own files, named beside it"),
        sections=sections,
    )


def build_sections(study: StudyOutputs) -> list[Section]:
    """Every section of the page, in order (a builder returning None leaves its section out)."""
    return [s for s in (build(study) for build in SECTIONS) if s is not None]


def render(study: StudyOutputs) -> str:
    """The page's HTML for the study's outputs."""
    return render_sections(build_sections(study), study)


def build_report(workdir: str | Path, output: str | Path | None = None) -> Path:
    """Write the report of the study in ``workdir`` to ``<workdir>/report/index.html`` (or ``output``).

    Each data figure's PNG and the CSV it was drawn from go to ``figures/`` beside the page.
    Returns the page's path. Raises :class:`ReportError` naming the file when an output of the
    study is there but unreadable; the previous page, if any, is then left as it was.
    """
    try:
        study = collect(workdir)
        sections = build_sections(study)
        html = render_sections(sections, study)
    except ReportInputError as err:
        raise ReportError(str(err)) from err
    path = Path(output) if output is not None else Path(workdir) / REPORT_PATH
    for figure in (f for section in sections for f in section.figures):
        files = figure.files
        if files and figure.png is not None and figure.data is not None:
            atomic_write_bytes(path.parent / files["image"], figure.png)
            atomic_write_text(path.parent / files["data"], figure.data)
    atomic_write_text(path, html)  # last: a page is never there without its figures' files
    return path
