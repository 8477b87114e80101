"""The report page: sections built from :class:`~fairsynth.report.collect.StudyOutputs`, one HTML file.

Every image is a thumbnail inlined as a ``data:`` URI and the page has no script, font or
stylesheet from elsewhere, so it opens from disk, offline. Numbers are shown as the study
wrote them, with the extractor and weights behind each metric.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from fairsynth.io import atomic_write_text
from fairsynth.report import plots
from fairsynth.report.collect import ReportInputError, StudyOutputs, collect, image_path

#: Thumbnail side of one image in the example grids, in pixels.
THUMB = 64
#: Groups of the downstream AUROC figure (DDI's three groups).
DDI_GROUPS = ("I-II", "III-IV", "V-VI")


class ReportError(ValueError):
    """The report cannot be built (a clear, user-facing message)."""


@dataclass
class Section:
    """One part of the page; ``ran`` False: the stage did not run and ``note`` says which."""

    id: str
    title: str
    ran: bool
    note: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)  # (data URI, caption)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)  # (caption, header, rows)
    paragraphs: list[str] = field(default_factory=list)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def thumbnail(path: Path, side: int = THUMB) -> Image.Image:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        return image.copy()


def file_uri(path: Path, side: int = 512) -> str:
    return image_uri(thumbnail(path, side))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _not_run(id_: str, title: str, stage: str) -> Section:
    return Section(id_, title, False, f"Stage not run: no outputs of `{stage}` in this study's folder.")


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


def dataset_section(study: StudyOutputs) -> Section:
    if study.counts is None:
        return _not_run("data", "The dataset: class × skin type", "prepare")
    section = Section("data", "The dataset: class × skin type", True)
    counts = study.counts
    section.figures.append((data_uri(plots.imbalance_heatmap(counts)), "Images per class and Fitzpatrick skin type (prepared/counts.csv)."))
    header = [counts.index.name or "class", *[str(c) for c in counts.columns]]
    rows = [[str(label), *[int(v) for v in row]] for label, row in counts.iterrows()]
    section.tables.append(("Counts (prepared/counts.csv)", header, rows))
    if "total" in counts.index and "total" in counts.columns:
        total = float(counts.loc["total", "total"]) or 1.0
        shares = {str(c): float(counts.loc["total", c]) / total for c in counts.columns if c != "total"}
        rare = ", ".join(f"{name} {100 * share:.1f} %" for name, share in shares.items())
        section.paragraphs.append(f"Share of images per skin type: {rare}.")
    return section


def training_section(study: StudyOutputs) -> Section:
    training = study.training
    if training is None:
        return _not_run("training", "Fine-tuning", "train")
    info = training.info
    section = Section("training", "Fine-tuning", True)
    section.paragraphs.append(
        f"Method <code>{info.get('method')}</code> on <code>{info.get('base_model', {}).get('source')}</code> for "
        f"{_fmt(info.get('steps'))} steps: {_fmt(info.get('trainable_parameters'))} trainable parameters, "
        f"{_fmt((info.get('adapter_bytes') or 0) / 1e6)} MB on disk, {_fmt(info.get('training_seconds'))} s, "
        f"final loss {_fmt(info.get('final_loss'))}."
    )
    if training.losses:
        section.figures.append((data_uri(plots.loss_curve(training.losses)), "Training loss (train/losses.csv)."))
    else:
        section.paragraphs.append("No loss log (train/losses.csv) in this study.")
    for step, path in training.validation[-4:]:
        section.figures.append((file_uri(path), f"Validation grid at step {step} ({path.name})."))
    if training.grids:
        for name, path in training.grids.items():
            caption = {"before": "The base before fine-tuning", "after": "After fine-tuning"}[name]
            section.figures.append((file_uri(path), f"{caption}: rows are classes, columns skin types I–VI ({path.name})."))
    if training.conditioning:
        rows = []
        for name, score in training.conditioning.items():
            rows.append([name, score.get("n"), _fmt(score.get("class_accuracy")), _fmt(score.get("fst_within_one")),
                         ", ".join(f"{k} {_fmt(v, 2)}" for k, v in (score.get("per_class") or {}).items())])
        section.tables.append((
            "Read back from pixels (train/conditioning.json): the lesion judge reads the class, ITA the skin type",
            ["model", "images", "class as asked", "skin type within one", "per class"], rows,
        ))
    return section


def _cell_grid(rows: list[str], columns: list[int], pick: dict[tuple[str, int], Path | None]) -> Image.Image:
    grid = Image.new("RGB", (THUMB * len(columns), THUMB * len(rows)), (235, 235, 235))
    draw = ImageDraw.Draw(grid)
    for r, label in enumerate(rows):
        for c, fst in enumerate(columns):
            path = pick.get((label, fst))
            if path is None:
                draw.line([(c * THUMB + 8, r * THUMB + THUMB // 2), ((c + 1) * THUMB - 8, r * THUMB + THUMB // 2)],
                          fill=(160, 160, 160), width=2)
                continue
            grid.paste(thumbnail(path), (c * THUMB, r * THUMB))
    return grid


def _first_per_cell(rows: list[dict[str, Any]], root: Path) -> dict[tuple[str, int], Path | None]:
    out: dict[tuple[str, int], Path | None] = {}
    for row in rows:
        key = (str(row.get("label")), row.get("fst"))
        if key in out or row.get("fst") is None:
            continue
        path = image_path(root, str(row.get("file_name", "")))
        if path is not None:
            out[key] = path
    return out


def generation_section(study: StudyOutputs) -> Section:
    generation = study.generation
    if generation is None:
        return _not_run("generated", "The synthetic set", "generate")
    report = generation.report
    section = Section("generated", "The synthetic set", True)
    section.paragraphs.append(
        f"{_fmt(report.get('delivered'))} images delivered of a target of {_fmt(report.get('target'))}; "
        f"{len(generation.candidates)} candidates generated and checked."
    )
    labels = sorted({str(r.get("label")) for r in generation.delivered} | {str(r.get("label")) for r in study.real or []})
    fsts = sorted({r["fst"] for r in generation.delivered if isinstance(r.get("fst"), int)}
                  | {r["fst"] for r in study.real or [] if isinstance(r.get("fst"), int)})
    if labels and fsts:
        synthetic = _cell_grid(labels, fsts, _first_per_cell(generation.delivered, generation.root))
        section.figures.append((image_uri(synthetic), "Generated (delivered): rows " + ", ".join(labels)
                                + "; columns skin types " + ", ".join(str(f) for f in fsts) + "; a line: none delivered."))
        if study.real and study.real_root is not None:
            real = _cell_grid(labels, fsts, _first_per_cell(study.real, study.real_root))
            section.figures.append((image_uri(real), "Real examples of the same cells (prepared data)."))
    shortfall = report.get("shortfall") or {}
    if shortfall:
        section.paragraphs.append("Short of the target: " + ", ".join(f"{cell} by {n}" for cell, n in shortfall.items()) + ".")
    return section


def filter_section(study: StudyOutputs) -> Section:
    generation = study.generation
    if generation is None:
        return _not_run("filters", "Filters", "generate")
    section = Section("filters", "Filters: rejections per check and cell", True)
    checks = list((generation.report.get("checks") or {}).keys())
    rows = []
    totals = {check: 0 for check in checks}
    for cell in generation.report.get("cells", []):
        rejected = cell.get("rejected_by") or {}
        for check, count in rejected.items():
            totals[check] = totals.get(check, 0) + count
        rows.append([cell.get("cell"), cell.get("target"), cell.get("generated"), cell.get("accepted"), cell.get("selected"),
                     *[rejected.get(check, 0) for check in totals]])
    header = ["cell", "target", "generated", "passed", "delivered", *[f"rejected: {c}" for c in totals]]
    section.tables.append(("Per cell (generated/report.json); an image may fail several checks", header, rows))
    section.tables.append(("Per check", ["check", "settings", "rejected"],
                           [[c, _fmt(generation.report.get("checks", {}).get(c)), totals[c]] for c in totals]))
    return section


def evaluation_section(study: StudyOutputs) -> Section:
    evaluation = study.evaluation
    if evaluation is None:
        return _not_run("metrics", "Metrics per group", "evaluate")
    section = Section("metrics", "Metrics per group", True)
    rows = []
    for row in evaluation.get("results", []):
        if row.get("group_by") not in ("overall", "fst", "class", "fst_group"):
            continue
        if row.get("value_name") not in (None, row.get("metric"), "precision", "recall", "density", "coverage", "share", "rate", "memorised_share"):
            continue
        interval = "" if row.get("ci_low") is None else f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
        rows.append([row.get("display"), row.get("value_name"), row.get("on"), f"{row.get('group_by')}={row.get('group')}",
                     _fmt(row.get("value")), interval, row.get("n_real"), row.get("n_synthetic"),
                     (row.get("weights_sha256") or "")[:12], "yes" if row.get("test_only") else ""])
    section.tables.append((
        "evaluation/evaluation.json: value, 95 % bootstrap interval, and the weights that produced it",
        ["metric", "value", "on", "group", "value", "interval", "n real", "n synthetic", "weights sha256", "test only"], rows,
    ))
    extractors = [[name, e.get("implementation"), e.get("image_size_policy")] for name, e in (evaluation.get("extractors") or {}).items()]
    section.tables.append(("Feature extractors behind the numbers", ["extractor", "implementation", "resize policy"], extractors))
    for warning in evaluation.get("warnings") or []:
        section.paragraphs.append(f"Warning: {warning}")
    return section


def memorisation_section(study: StudyOutputs) -> Section:
    evaluation, generation = study.evaluation, study.generation
    worst = []
    for cases in ((evaluation or {}).get("memorisation_worst") or {}).values():
        worst += cases
    flagged = list((generation.report.get("memorised") or []) if generation else [])
    if evaluation is None and generation is None:
        return _not_run("memorisation", "Memorisation", "evaluate")
    section = Section("memorisation", "Memorisation: synthetic images next to their nearest training image", True)
    section.paragraphs.append(
        f"{sum(1 for case in worst if case.get('memorised'))} of the {len(worst)} closest pairs listed by the "
        f"evaluation are flagged as memorised; the generation's memorisation filter rejected {len(flagged)}."
    )
    if generation is None or study.real_root is None:
        return section
    pairs = sorted(worst, key=lambda case: (not case.get("memorised"), case.get("distance", 0.0)))[:6]
    for case in pairs:
        synthetic = image_path(generation.root, str(case.get("synthetic_image", "")))
        training = image_path(study.real_root, str(case.get("nearest_training_image", "")))
        if synthetic is None or training is None:
            continue
        pair = Image.new("RGB", (2 * 96 + 4, 96), (255, 255, 255))
        pair.paste(thumbnail(synthetic, 96), (0, 0))
        pair.paste(thumbnail(training, 96), (100, 0))
        verdict = "memorised" if case.get("memorised") else "not memorised"
        section.figures.append((image_uri(pair), f"{case.get('synthetic_id')} (left) and training image "
                                f"{case.get('nearest_training_id')}: distance {_fmt(case.get('distance'))}, {verdict}"))
    return section


def downstream_section(study: StudyOutputs) -> Section:
    compare = study.downstream
    if compare is None:
        return _not_run("downstream", "Downstream: does the synthetic data help?", "downstream")
    section = Section("downstream", "Downstream: does the synthetic data help?", True)
    arms, table = compare.get("arms", []), compare.get("table", {})
    groups = [g for g in DDI_GROUPS if f"auroc.{g}" in table]
    if groups:
        section.figures.append((data_uri(plots.auroc_bars(table, arms, groups)),
                                f"AUROC per skin-type group, mean over seeds {compare.get('seeds')}; bars: sd over seeds."))
    rows = []
    for key, row in table.items():
        cells = []
        for arm in arms:
            summary = row.get("arms", {}).get(arm) or {}
            sd = "" if summary.get("sd") is None else f" ± {_fmt(summary['sd'])}"
            cells.append(f"{_fmt(summary.get('mean'))}{sd}")
        for arm in arms[1:]:
            delta = (row.get("delta_vs_real") or {}).get(arm) or {}
            if delta.get("low") is None:
                cells.append(_fmt(delta.get("mean")))
            else:
                noise = "within noise" if delta.get("within_noise") else "beyond noise"
                cells.append(f"{delta['mean']:+.3f} [{delta['low']:+.3f}, {delta['high']:+.3f}] {noise}")
        rows.append([row.get("label", key) + (" ↑" if row.get("higher_is_better") else " ↓"), *cells])
    section.tables.append(("downstream/compare.json: mean ± sd over seeds; deltas paired by seed with a 95 % t-interval",
                           ["metric", *arms, *[f"{arm} − real" for arm in arms[1:]]], rows))
    return section


def sweep_section(study: StudyOutputs) -> Section | None:
    if study.sweep is None:
        return None
    section = Section("sweep", "Sweep: one row per configuration", True)
    columns: list[str] = []
    for row in study.sweep:
        columns += [key for key in row if key not in columns]
    section.tables.append(("sweep/table.json", columns, [[_fmt(row.get(c)) for c in columns] for row in study.sweep]))
    return section


def model_card_section(study: StudyOutputs) -> Section:
    section = Section("card", "Model card: what synthetic data went where", True)
    info = study.training.info if study.training else None
    if info:
        data = info.get("dataset", {})
        section.paragraphs.append(
            f"The generator: <code>{info.get('method')}</code> fine-tune of <code>{info.get('base_model', {}).get('source')}</code> "
            f"(weights sha256 {str(info.get('base_model', {}).get('sha256', ''))[:16]}…) on {_fmt(data.get('images'))} images of "
            f"<code>{data.get('manifest')}</code>, of which {_fmt(data.get('synthetic_images'))} synthetic."
        )
    if study.generation:
        per_cell = {}
        for row in study.generation.delivered:
            per_cell[row.get("cell", "?")] = per_cell.get(row.get("cell", "?"), 0) + 1
        section.paragraphs.append(
            f"The synthetic set: {len(study.generation.delivered)} images in <code>generated/</code>, every one marked "
            "<code>synthetic: true</code> in its manifest row with its prompt, seed, scheduler, base and adapter hashes."
        )
        section.tables.append(("Synthetic images per cell", ["cell", "images"], sorted(per_cell.items())))
    if study.downstream:
        config = ((study.downstream_config or {}).get("downstream") or {})
        uses = [arm for arm in study.downstream.get("arms", []) if arm != "real"]
        mix = config.get("mix") or {}
        section.paragraphs.append(
            "The classifiers: the <code>real</code> arm saw no synthetic image; "
            + (f"{', '.join(f'<code>{a}</code>' for a in uses)} trained with synthetic images "
               f"(mixed arm synthetic share: <code>{mix.get('synthetic_share')}</code>). " if uses else "")
            + "Every arm was selected on the real validation split and tested once on the real test split."
        )
    section.paragraphs.append("Images in the synthetic set are generated, not photographs of patients or products; "
                              "they must not be presented or used as real.")
    return section


def run_section(study: StudyOutputs) -> Section | None:
    if not study.run_state:
        return None
    section = Section("run", "Stages of this run", True)
    rows = [[name, state.get("finished") or "not finished", state.get("seconds"), state.get("finished_at")]
            for name, state in study.run_state.items()]
    section.tables.append(("run-state.json", ["stage", "fingerprint", "seconds", "finished at"], rows))
    return section


# --------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#fafbfc}
header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.85}
nav{padding:8px 28px;background:#eef2f6;border-bottom:1px solid #d8dee6}nav a{margin-right:14px;color:#1f3b57}
main{padding:8px 28px 40px;max-width:1200px}section{margin:22px 0;padding:14px 18px;background:#fff;border:1px solid #e1e6ec;border-radius:6px}
h2{font-size:18px;margin:0 0 10px}.notrun{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top;max-width:100%}figure img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:12px;color:#555;max-width:520px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px}caption{text-align:left;font-size:12px;color:#555;padding:2px 0}
th,td{border:1px solid #dde3ea;padding:3px 7px;text-align:right}th{background:#f1f4f7}td:first-child,th:first-child{text-align:left}
.wide{overflow-x:auto}code{background:#f1f4f7;padding:0 3px;border-radius:3px}
</style></head><body>
<header><h1>{{ title }}</h1><p>{{ subtitle }}</p></header>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title.split(':')[0] }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}<section id="{{ s.id }}"><h2>{{ s.title }}</h2>
{% if not s.ran %}<p class="notrun">{{ s.note }}</p>{% endif %}
{% for p in s.paragraphs %}<p>{{ p | safe }}</p>{% endfor %}
{% for uri, caption in s.figures %}<figure><img src="{{ uri }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>{% endfor %}
{% for caption, header, rows in s.tables %}<div class="wide"><table><caption>{{ caption }}</caption>
<tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table></div>{% endfor %}
</section>{% endfor %}
</main></body></html>
"""


def render(study: StudyOutputs) -> str:
    import jinja2

    sections = [
        dataset_section(study), training_section(study), generation_section(study), filter_section(study),
        evaluation_section(study), memorisation_section(study), downstream_section(study),
        sweep_section(study), model_card_section(study), run_section(study),
    ]
    name = (study.recipe or {}).get("name") or study.workdir.name
    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(TEMPLATE).render(
        title=f"fairsynth study: {name}",
        subtitle=f"{study.workdir} · built {time.strftime('%Y-%m-%d %H:%M')} · every number below is read from the study's own files",
        sections=[s for s in sections if s is not None],
    )


def build_report(workdir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``<workdir>/report/index.html`` (or ``output``) for the study in ``workdir``; returns its path."""
    try:
        study = collect(workdir)
        html = render(study)
    except ReportInputError as err:
        raise ReportError(str(err)) from err
    path = Path(output) if output is not None else Path(workdir) / "report" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, html)
    return path
