"""The report's sections, each built from :class:`~fairsynth.report.collect.StudyOutputs`.

A section is plain data (paragraphs, figures as data URIs, tables of strings) for the page
template. A stage that did not run gives a section that says so; every number is read from the
study's own files and shown with the file it came from, metrics with the extractor and weights
that produced them. The page opens on the verdict (:mod:`.verdict`) and its forest plot; each
section then leads with its picture (:mod:`.figures`) and keeps its full tables collapsed below.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from statistics import median
from typing import Any, Callable

from PIL import Image

from fairsynth.data.images import ImageReadError, read_image
from fairsynth.report import figures, plots
from fairsynth.report.collect import ReportInputError, StudyOutputs, image_path
from fairsynth.report.figures import Figure, data_uri
from fairsynth.report.verdict import Sentence, comparison, test_split, verdict
from fairsynth.world.truth import summary_line

#: Largest side of one image in the class x skin-type grids and memorisation pairs, in pixels.
THUMB = 96
#: Largest side of a whole grid image saved by training (before/after, validation), in pixels.
GRID_SIDE = 640
#: Groups of the downstream AUROC figure (DDI's three groups).
DDI_GROUPS = ("I-II", "III-IV", "V-VI")
#: Memorisation pairs shown per source (the evaluation's closest pairs, the filter's rejections).
MAX_PAIRS = 8
#: Validation grids shown, spread over training from the first to the last.
MAX_VALIDATION_GRIDS = 4
#: Groupings of the metric tables, in order (the class x skin-type cross is in evaluation.csv).
METRIC_GROUPINGS = ("overall", "fst", "fst_group", "class")


@dataclass
class Table:
    """One table of the page: its caption, header and rows of display strings."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    #: The last column is text (notes) that wraps; the others keep to one line.
    text_last: bool = False
    #: Shown collapsed (in ``<details>``): a full table whose figure above says the same in a picture.
    collapsed: bool = False


@dataclass
class Section:
    """One part of the page; ``ran`` False: the stage did not run and ``note`` says which.

    ``paragraphs`` hold HTML built here from escaped values (see :func:`code`); tables and
    captions are plain text and escaped by the template.
    """

    id: str
    title: str
    ran: bool = True
    note: str = ""
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings and notes the stage wrote, plain text
    sentences: list[Sentence] = field(default_factory=list)  # the verdict's, plain text


# --------------------------------------------------------------------------------------
# Formatting and images
# --------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A value as the page shows it: floats to ``digits`` significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def interval(low: Any, high: Any) -> str:
    """``[low, high]``, or empty when the interval is unknown."""
    return "" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"


def code(value: Any) -> str:
    """An escaped value in ``<code>`` for a paragraph."""
    return f"<code>{escape(str(value))}</code>"


def thumbnail(path: Path, side: int = THUMB) -> Image.Image:
    """The image at ``path`` in RGB, downscaled so its longer side is at most ``side``."""
    try:
        image = read_image(path).convert("RGB")
    except ImageReadError as err:
        raise ReportInputError(f"{path} is not a readable image ({err.reason})") from err
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def image_uri(image: Image.Image) -> str:
    """An image as an optimised PNG data URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def file_uri(path: Path, side: int = GRID_SIDE) -> str:
    """The image file at ``path``, downscaled to ``side`` and inlined."""
    return image_uri(thumbnail(path, side))


def spread(items: list[Any], count: int) -> list[Any]:
    """Up to ``count`` of ``items`` evenly spaced, the first and the last included."""
    if len(items) <= count:
        return list(items)
    return [items[round(k * (len(items) - 1) / (count - 1))] for k in range(count)]


def not_run(id_: str, title: str, stages: str | tuple[str, ...], files: str) -> Section:
    """The section of a stage (of either of ``stages``) whose outputs are absent."""
    named = " or ".join(f"`{stage}`" for stage in ((stages,) if isinstance(stages, str) else stages))
    return Section(id_, title, ran=False, note=f"Stage not run: no outputs of {named} in this study's folder ({files}).")


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


def verdict_section(study: StudyOutputs) -> Section:
    """The answer: the verdict's sentences, then the forest plot of the headline comparison."""
    section = Section("verdict", "The answer", sentences=verdict(study))
    c = comparison(study)
    if c is not None:
        figure = figures.forest_figure(c, "forest", "Is the classifier better and fairer?")
        if figure is not None:
            section.figures.append(figure)
    return section


def dataset_section(study: StudyOutputs) -> Section:
    """Class x skin-type counts of the prepared data: table and heatmap."""
    title = "The dataset: class × skin type"
    if study.counts is None:
        return not_run("data", title, "prepare", "prepared/counts.csv")
    section = Section("data", title)
    counts = study.counts
    if "total" in counts.index and "total" in counts.columns:
        total = float(counts.loc["total", "total"]) or 1.0
        shares = ", ".join(f"{c} {100 * float(counts.loc['total', c]) / total:.1f} %" for c in counts.columns if c != "total")
        section.paragraphs.append(f"{fmt(int(counts.loc['total', 'total']))} prepared images. Share per skin type: {escape(shares)}.")
    section.figures.append(Figure(data_uri(plots.imbalance_heatmap(counts)),
                                  "Images per class and Fitzpatrick skin type (prepared/counts.csv)."))
    header = [str(counts.index.name or "class"), *[str(c) for c in counts.columns]]
    rows = [[str(label), *[fmt(int(v)) for v in row]] for label, row in counts.iterrows()]
    section.tables.append(Table("Counts (prepared/counts.csv)", header, rows, collapsed=True))
    return section


def training_section(study: StudyOutputs) -> Section:
    """Method and base, the loss curve, validation grids, before/after grids and their scores."""
    training = study.training
    if training is None:
        return not_run("training", "Fine-tuning", "train", "train/model/training_info.json")
    info = training.info
    base = info.get("base_model") or {}
    section = Section("training", "Fine-tuning")
    section.paragraphs.append(
        f"Method {code(info.get('method'))} on {code(base.get('source'))} for {fmt(info.get('steps'))} steps: "
        f"{fmt(info.get('trainable_parameters'))} trainable parameters, {fmt((info.get('adapter_bytes') or 0) / 1e6)} MB "
        f"on disk, {fmt(info.get('training_seconds'))} s, final loss {fmt(info.get('final_loss'))} "
        f"(train/model/training_info.json)."
    )
    if training.losses:
        section.figures.append(Figure(data_uri(plots.loss_curve(training.losses)), "Training loss per logged step (train/losses.csv)."))
    else:
        section.paragraphs.append("No loss log in this study (train/losses.csv is absent).")
    if training.validation:
        for step, path in spread(training.validation, MAX_VALIDATION_GRIDS):
            section.figures.append(Figure(file_uri(path), f"Validation grid at step {step} (train/validation/{path.name})."))
    else:
        section.paragraphs.append("No validation grids were saved during training (train/validation/ is absent: "
                                  "train.validation.every was 0).")
    names = {"before": ("The base before fine-tuning", "grid-base.png"), "after": ("After fine-tuning", "grid-fine-tuned.png")}
    for name, path in training.grids.items():
        caption, file = names[name]
        section.figures.append(Figure(file_uri(path), f"{caption}: rows are classes, columns skin types (train/{file})."))
    if training.conditioning:
        rows = []
        for name, score in training.conditioning.items():
            if name == "judge":  # the judge's own held-out accuracy, not a model's score
                continue
            per_class = ", ".join(f"{k} {fmt(v, 2)}" for k, v in (score.get("per_class") or {}).items())
            rows.append([name, fmt(score.get("n")), fmt(score.get("class_accuracy")), fmt(score.get("fst_within_one")), per_class])
        section.tables.append(Table(
            "Read back from the grids' pixels (train/conditioning.json): the lesion judge reads the class, ITA the skin type",
            ["model", "images", "class as asked", "skin type within one", "class as asked, per class"], rows,
        ))
    return section


def _first_per_cell(rows: list[dict[str, Any]], root: Path) -> dict[tuple[str, Any], Image.Image]:
    out: dict[tuple[str, Any], Image.Image] = {}
    for row in rows:
        key = (str(row.get("label")), row.get("fst"))
        if key in out or row.get("fst") is None:
            continue
        path = image_path(root, str(row.get("file_name", "")))
        if path is not None:
            out[key] = thumbnail(path)
    return out


def _roman(fst: Any) -> str:
    return {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}.get(fst, str(fst))


def generation_section(study: StudyOutputs) -> Section:
    """The delivered synthetic images per class x skin type beside real images of the same cells."""
    generation = study.generation
    if generation is None:
        return not_run("generated", "The synthetic set", "generate", "generated/report.json")
    report = generation.report
    section = Section("generated", "The synthetic set")
    section.paragraphs.append(
        f"{fmt(report.get('delivered'))} images delivered of a target of {fmt(report.get('target'))}; "
        f"{fmt(len(generation.candidates))} candidates generated and checked (generated/report.json, candidates.jsonl)."
    )
    cells = figures.cells_figure(generation)
    if cells is not None:
        section.figures.append(cells)
    adapters = ", ".join(f"{code(a.get('method'))} ({code(a.get('path'))})" for a in report.get("adapters") or [])
    if report.get("base_model"):
        section.paragraphs.append(f"Generated by {code((report['base_model'] or {}).get('source'))}"
                                  + (f" with {adapters}" if adapters else "") + ".")
    real = study.real or []
    labels = sorted({str(r.get("label")) for r in generation.delivered} | {str(r.get("label")) for r in real})
    fsts = sorted({r["fst"] for r in generation.delivered if isinstance(r.get("fst"), int)}
                  | {r["fst"] for r in real if isinstance(r.get("fst"), int)})
    if labels and fsts:
        columns = [_roman(f) for f in fsts]
        def by_roman(images: dict[tuple[str, Any], Image.Image]) -> dict[tuple[str, Any], Image.Image]:
            return {(label, _roman(fst)): image for (label, fst), image in images.items()}
        synthetic = by_roman(_first_per_cell(generation.delivered, generation.root))
        section.figures.append(Figure(
            data_uri(plots.cell_grid(synthetic, labels, columns, "Generated")),
            "Generated: the first delivered image of each class × skin-type cell (generated/metadata.jsonl); "
            "'none': no image delivered for the cell.",
        ))
        if real and study.real_root is not None:
            section.figures.append(Figure(
                data_uri(plots.cell_grid(by_roman(_first_per_cell(real, study.real_root)), labels, columns, "Real")),
                "Real: the first prepared image of the same cells (prepared/metadata.jsonl).",
            ))
    truth = report.get("truth")
    if truth:
        section.paragraphs.append(f"The truth: {summary_line(truth)}.")
        section.tables.append(Table(
            "The truth per class × skin-type cell (generated/report.json, truth): the world's judge, trained on "
            "balanced true renders, reads every candidate; class as asked among the delivered images, all "
            "candidates, and those the filters accepted and rejected",
            ["cell", "delivered", "class as asked (delivered)", "candidates", "class as asked (candidates)",
             "accepted: as asked", "rejected: as asked", "skin type within one"],
            [[f"{cell['label']} | {_roman(cell['fst'])}", fmt(cell.get("delivered")), _share(cell.get("class_as_asked")),
              fmt(cell.get("candidates")), _share(cell.get("candidates_class_as_asked")),
              _share(cell.get("accepted_class_as_asked")), _share(cell.get("rejected_class_as_asked")),
              _share(cell.get("fst_within_one"))] for cell in (truth.get("cells") or {}).values()],
            collapsed=True,
        ))
    shortfall = report.get("shortfall") or {}
    if shortfall:
        section.paragraphs.append("Short of the target: " + escape(", ".join(f"{cell} by {n}" for cell, n in shortfall.items())) + ".")
    section.notes += [f"generated/report.json: {warning}" for warning in report.get("warnings") or []]
    return section


def _share(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


def _check_values(name: str, rows: list[dict[str, Any]]) -> str:
    """min / median / max of a check's numeric columns over the candidates that have them."""
    parts = []
    columns = sorted({key for row in rows for key in row if key.startswith(f"{name}_")
                      and key not in (f"{name}_ok", f"{name}_measured_with")})
    for column in columns:
        values = [row[column] for row in rows if isinstance(row.get(column), (int, float)) and not isinstance(row.get(column), bool)]
        if values:
            parts.append(f"{column.removeprefix(name + '_')} {fmt(min(values))} / {fmt(median(values))} / {fmt(max(values))}")
    return "; ".join(parts)


def filter_section(study: StudyOutputs) -> Section:
    """Rejections per check (with each check's measured values) and per class x skin-type cell."""
    generation = study.generation
    if generation is None:
        return not_run("filters", "Filters", "generate", "generated/report.json")
    section = Section("filters", "Filters: rejections per check and cell")
    settings = generation.report.get("checks") or {}
    checks = list(settings)
    cells = generation.report.get("cells", [])
    for cell in cells:
        checks += [c for c in (cell.get("rejected_by") or {}) if c not in checks]
    candidates = generation.candidates
    rows = []
    for check in checks:
        verdicts = Counter(row.get(f"{check}_ok") for row in candidates)
        measured_with = sorted({str(row[f"{check}_measured_with"]) for row in candidates if row.get(f"{check}_measured_with")})
        rows.append([check, fmt(settings.get(check)), fmt(verdicts.get(True, 0)), fmt(verdicts.get(False, 0)),
                     fmt(sum(n for v, n in verdicts.items() if v is None)), _check_values(check, candidates),
                     ", ".join(measured_with)])
    section.tables.append(Table(
        "Per check, over every candidate (generated/candidates.jsonl: each check's values and verdict per image); "
        "values: min / median / max",
        ["check", "settings", "passed", "rejected", "not measured", "values", "measured with"], rows,
    ))
    per_cell = []
    for cell in cells:
        rejected = cell.get("rejected_by") or {}
        per_cell.append([str(cell.get("cell")), fmt(cell.get("target")), fmt(cell.get("generated")), fmt(cell.get("accepted")),
                         fmt(cell.get("selected")), *[fmt(rejected.get(check, 0)) for check in checks]])
    section.tables.append(Table(
        "Per class × skin-type cell (generated/report.json); an image may fail several checks",
        ["cell", "target", "generated", "passed", "delivered", *[f"rejected by {c}" for c in checks]], per_cell,
        collapsed=True,
    ))
    return section


def _weights(extractor: dict[str, Any] | None, sha256: str | None) -> str:
    """The weights behind a number: the file (or the standard file it matches) and its sha256."""
    extractor = extractor or {}
    name = extractor.get("weights_reference") or (Path(extractor["weights_file"]).name if extractor.get("weights_file") else None)
    sha = sha256 or extractor.get("weights_sha256")
    parts = [name or ("random (test only)" if extractor.get("test_only") else "built in")]
    if sha:
        parts.append(f"sha256 {sha[:12]}…")
    if extractor.get("weights_match_reference") is False:
        parts.append("does not match the standard file")
    return ", ".join(parts)


def evaluation_section(study: StudyOutputs) -> Section:
    """Metric tables per grouping, each number with its interval, extractor and weights."""
    evaluation = study.evaluation
    title = "Metrics per group"
    if evaluation is None:
        return not_run("metrics", title, "evaluate", "evaluation/evaluation.json")
    section = Section("metrics", title)
    extractors = evaluation.get("extractors") or {}
    section.paragraphs.append(
        "Every value is read from evaluation/evaluation.json with its 95 % bootstrap interval, the feature "
        "extractor that embedded the images and the weights it ran with (first 12 hex digits of their sha256; the "
        "last table describes each extractor): values from different extractors or weights are not comparable."
    )
    bars = figures.metrics_figure(evaluation)
    if bars is not None:
        section.figures.append(bars)
    results = evaluation.get("results") or []
    for grouping in METRIC_GROUPINGS:
        rows = []
        for row in results:
            if row.get("group_by") != grouping:
                continue
            extractor = extractors.get(row.get("extractor")) or {}
            name = row.get("display") or row.get("metric")
            if row.get("value_name") not in (None, row.get("metric")):
                name = f"{name}: {row['value_name']}"
            rows.append([
                str(name), str(row.get("on") or ""), str(row.get("group")), fmt(row.get("value")),
                interval(row.get("ci_low"), row.get("ci_high")), fmt(row.get("n_real")), fmt(row.get("n_synthetic")),
                str(row.get("extractor") or "—"),
                _weights(extractor, row.get("weights_sha256")) if row.get("extractor") else "—",
                "RANDOM WEIGHTS" if row.get("test_only") else (row.get("warning") or row.get("undefined") or ""),
            ])
        if rows:
            section.tables.append(Table(
                f"Grouped by {grouping}",
                ["metric", "on", "group", "value", "95 % interval", "n real", "n synthetic", "extractor", "weights", "note"], rows,
                text_last=True, collapsed=True,
            ))
    section.tables.append(Table(
        "Feature extractors behind the numbers (evaluation/evaluation.json: extractors)",
        ["extractor", "implementation", "weights", "input size", "resize policy"],
        [[name, str(e.get("implementation")), _weights(e, None), "x".join(str(s) for s in e.get("input_size") or []),
          str(e.get("image_size_policy_id") or e.get("image_size_policy"))] for name, e in extractors.items()],
        collapsed=True,
    ))
    section.notes += [f"Warning (evaluation.json): {warning}" for warning in evaluation.get("warnings") or []]
    section.notes += [f"evaluation.json: {note}" for note in evaluation.get("notes") or []]
    return section


def _pair(synthetic: Path, training: Path) -> Image.Image:
    pair = Image.new("RGB", (2 * THUMB + 6, THUMB), (255, 255, 255))
    left, right = thumbnail(synthetic).resize((THUMB, THUMB)), thumbnail(training).resize((THUMB, THUMB))
    pair.paste(left, (0, 0))
    pair.paste(right, (THUMB + 6, 0))
    return pair


def memorisation_section(study: StudyOutputs) -> Section:
    """Synthetic images next to the training image they are nearest to: the filter's rejections
    (``memorised`` in generated/report.json) and the evaluation's closest pairs."""
    evaluation, generation = study.evaluation, study.generation
    title = "Memorisation: synthetic images next to the training image they copy"
    if evaluation is None and generation is None:
        return not_run("memorisation", title, ("generate", "evaluate"), "generated/report.json, evaluation/evaluation.json")
    section = Section("memorisation", title)
    flagged = list((generation.report.get("memorised") or []) if generation else [])
    checked = generation is not None and "memorisation" in (generation.report.get("checks") or {})
    worst = [case for cases in ((evaluation or {}).get("memorisation_worst") or {}).values() for case in cases]
    section.paragraphs.append(
        (f"The generation's memorisation filter rejected {fmt(len(flagged))} images (generated/report.json). "
         if checked else "The generation did not run the memorisation filter. ")
        + (f"The evaluation lists {fmt(len(worst))} closest pairs, {fmt(sum(1 for c in worst if c.get('memorised')))} "
           "of them flagged as memorised (evaluation/evaluation.json)." if evaluation is not None and worst
           else "The evaluation measured no memorisation." if evaluation is not None else "")
    )
    if generation is None or study.real_root is None:
        return section
    for case in flagged[:MAX_PAIRS]:
        synthetic = image_path(generation.root, str(case.get("image", "")))
        training = image_path(study.real_root, str(case.get("copies", "")))
        if synthetic is None or training is None:
            continue
        section.figures.append(Figure(image_uri(_pair(synthetic, training)), (
            f"Rejected by the filter: {case.get('image')} (left) and the training image it copies, {case.get('copies')} "
            f"(right): distance {fmt(case.get('distance'))}, LPIPS {fmt(case.get('lpips'))}."
        )))
    for case in sorted(worst, key=lambda c: (not c.get("memorised"), c.get("distance") or 0.0))[:MAX_PAIRS]:
        synthetic = image_path(generation.root, str(case.get("synthetic_image", "")))
        training = image_path(study.real_root, str(case.get("nearest_training_image", "")))
        if synthetic is None or training is None:
            continue
        verdict = "memorised" if case.get("memorised") else "not memorised"
        section.figures.append(Figure(image_uri(_pair(synthetic, training)), (
            f"Evaluation: {case.get('synthetic_id')} (left) and its nearest training image {case.get('nearest_training_id')} "
            f"(right): distance {fmt(case.get('distance'))}, {verdict}."
        )))
    if len(flagged) > MAX_PAIRS:
        section.paragraphs.append(f"The first {MAX_PAIRS} of the filter's {len(flagged)} rejections are shown.")
    return section


def _ddi_runs(study: StudyOutputs) -> dict[str, dict[int, dict[str, Any]]]:
    """arm -> seed -> DDI group -> that run's AUROC with its bootstrap interval."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, seeds in study.downstream_runs.items():
        for seed, run in seeds.items():
            groups = (((run.get("metrics") or {}).get("per_ddi_group") or {}).get("group_auroc")) or {}
            if groups:
                out.setdefault(arm, {})[seed] = groups
    return out


def downstream_section(study: StudyOutputs) -> Section:
    """The protocols' pictures (ratio curve, ablation), a forest plot per other test set, and the
    comparison's full tables collapsed below."""
    compare = study.downstream
    title = "Downstream: does the synthetic data help?"
    if compare is None and study.curve is None and study.ablation is None:
        return not_run("downstream", title, "downstream", "downstream/compare.json")
    section = Section("downstream", title)
    if study.ablation is not None:
        worth = (study.ablation.get("worth") or {}).get("sentence")
        if worth:
            section.paragraphs.append(escape(str(worth)) + " (downstream/ablate.json)")
        figure = figures.ablation_figure(study.ablation)
        if figure is not None:
            section.figures.append(figure)
    if study.curve is not None:
        figure = figures.curve_figure(study.curve)
        if figure is not None:
            section.figures.append(figure)
        if study.curve.get("shortfall"):
            section.notes.append(f"downstream/curve.json: {study.curve['shortfall']}")
    if compare is None:
        section.paragraphs.append("No comparison of arms (downstream/compare.json is absent).")
        return section
    arms, table = compare.get("arms", []), compare.get("table", {})
    headline = comparison(study)
    if headline is not None and headline.key != "test split":
        section.paragraphs.append(
            f"The answer above reads the external test set {escape(headline.key)}; the in-distribution test split is pictured "
            "here. Every table is below, collapsed."
        )
        figure = figures.forest_figure(test_split(study), "forest-test-split", "The same question, in distribution:")
        if figure is not None:
            section.figures.append(figure)
    runs = _ddi_runs(study)
    section.tables.append(_compare_table(
        table, arms, "downstream/compare.json: mean ± sd over seeds; deltas paired by seed with a 95 % t-interval",
        (compare.get("tests") or {}).get("description"),
    ))
    for name, tested in (compare.get("test_sets") or {}).items():
        sizes = ", ".join(f"{group} {n}" for group, n in (tested.get("images_by_group") or {}).items())
        section.tables.append(_compare_table(
            tested.get("table") or {}, arms,
            f"External test set {name} ({fmt(tested.get('images'))} images: {sizes}; "
            f"{tested.get('manifest')}), never pooled with the test split: mean ± sd over seeds; "
            "deltas paired by seed with a 95 % t-interval", (tested.get("tests") or {}).get("description"),
        ))
    for name, shares in (compare.get("oracle_share") or {}).items():
        share_rows = []
        for arm, metrics in (shares.get("arms") or {}).items():
            for entry in metrics.values():
                share = ("undefined: " + str(entry.get("note")) if entry.get("share") is None
                         else f"{entry['share']:.0%} {interval(*(entry.get('share_interval') or [None, None]))}")
                share_rows.append([arm, str(entry.get("label")) + (" ↑" if entry.get("higher_is_better") else " ↓"),
                                   f"{fmt(entry.get('effect'))} {interval(*(entry.get('effect_interval') or [None, None]))}",
                                   f"{fmt(entry.get('oracle_effect'))} {interval(*(entry.get('oracle_effect_interval') or [None, None]))}",
                                   share])
        section.tables.append(Table(
            f"Share of the oracle's effect on {name} (downstream/compare.json, oracle_share): {shares.get('method')}",
            ["arm", "metric", "arm − real", "oracle − real", "share of the oracle's effect"], share_rows, collapsed=True,
        ))
    if runs:
        run_rows = []
        for arm, seeds in runs.items():
            for seed, per_group in seeds.items():
                run_rows.append([arm, str(seed), *[
                    f"{fmt((per_group.get(g) or {}).get('estimate'))} "
                    f"{interval((per_group.get(g) or {}).get('low'), (per_group.get(g) or {}).get('high'))}".strip()
                    for g in DDI_GROUPS]])
        method = next((run.get("metrics", {}).get("per_ddi_group", {}).get("interval") for seeds in study.downstream_runs.values()
                       for run in seeds.values()), None)
        section.tables.append(Table(
            f"AUROC per group per run with its bootstrap interval ({method or 'bootstrap'}; downstream/<arm>/seed-<seed>/metrics.json)",
            ["arm", "seed", *[f"AUROC {g}" for g in DDI_GROUPS]], run_rows, collapsed=True,
        ))
    return section


def _compare_table(table: dict[str, Any], arms: list[str], caption: str, tests: str | None = None) -> Table:
    """One row per metric: each arm's mean ± sd over seeds, then each arm's paired delta against real
    (with, where the comparison has it, the bootstrap interval over test images); ``tests``: the
    line naming the seeds, test images and tests used."""
    rows = []
    for key, row in table.items():
        cells = []
        for arm in arms:
            summary = (row.get("arms") or {}).get(arm) or {}
            sd = "" if summary.get("sd") is None else f" ± {fmt(summary['sd'])}"
            cells.append(f"{fmt(summary.get('mean'))}{sd}")
        for arm in arms[1:]:
            delta = (row.get("delta_vs_real") or {}).get(arm) or {}
            if delta.get("low") is None:
                text = fmt(delta.get("mean"))
            else:
                noise = "within noise" if delta.get("within_noise") else "beyond noise"
                text = f"{delta['mean']:+.3f} [{delta['low']:+.3f}, {delta['high']:+.3f}] {noise}"
            images = delta.get("test_images") or {}
            if images.get("low") is not None and images.get("high") is not None:
                text += f"; test images [{images['low']:+.3f}, {images['high']:+.3f}]"
            cells.append(text)
        rows.append([str(row.get("label", key)) + (" ↑" if row.get("higher_is_better") else " ↓"), *cells])
    if tests:
        caption += f". Compared on: {tests}"
    return Table(caption, ["metric", *arms, *[f"{arm} − real" for arm in arms[1:]]], rows, collapsed=True)


def sweep_section(study: StudyOutputs) -> Section | None:
    """The sweep's table, every column of every row; None (no section) when there is no sweep."""
    if study.sweep is None:
        return None
    section = Section("sweep", "Sweep: one row per configuration")
    columns: list[str] = []
    for row in study.sweep:
        columns += [key for key in row if key not in columns]
    source = study.sweep_file.relative_to(study.workdir) if study.sweep_file else "sweep"
    section.tables.append(Table(str(source), columns, [[fmt(row.get(c)) for c in columns] for row in study.sweep]))
    return section


def model_card_section(study: StudyOutputs) -> Section:
    """What synthetic data went where: the generator, the set, and each classifier arm's share."""
    section = Section("card", "Model card: what synthetic data went where")
    info = study.training.info if study.training else None
    if info:
        data = info.get("dataset") or {}
        base = info.get("base_model") or {}
        section.paragraphs.append(
            f"The generator: a {code(info.get('method'))} fine-tune of the base {code(base.get('source'))} "
            f"(weights sha256 {escape(str(base.get('sha256') or '')[:16])}…) on {fmt(data.get('images'))} images of "
            f"{code(data.get('manifest'))} (split {code(data.get('split'))}), of which {fmt(data.get('synthetic_images'))} "
            "synthetic (train/model/training_info.json)."
        )
    else:
        section.paragraphs.append("The generator: stage not run (train/model/training_info.json is absent).")
    if study.generation:
        delivered = study.generation.delivered
        section.paragraphs.append(
            f"The synthetic set: {fmt(len(delivered))} images in {code('generated/')}, every one marked "
            f"{code('synthetic: true')} in its manifest row with its prompt, seed, scheduler, base and adapter hashes."
        )
        per_cell = Counter(str(row.get("cell", "?")) for row in delivered)
        section.tables.append(Table("Synthetic images per class × skin-type cell (generated/metadata.jsonl)",
                                    ["cell", "images"], [[cell, fmt(n)] for cell, n in sorted(per_cell.items())],
                                    collapsed=True))
    else:
        section.paragraphs.append("The synthetic set: stage not run (generated/report.json is absent).")
    if study.downstream:
        rows, mixes = [], []
        for arm in study.downstream.get("arms", []):
            for seed, run in sorted(study.downstream_runs.get(arm, {}).items()):
                images = run.get("train_images") or {}
                real, synthetic = images.get("real") or 0, images.get("synthetic") or 0
                share = synthetic / (real + synthetic) if real + synthetic else None
                rows.append([arm, str(seed), fmt(real), fmt(synthetic), "—" if share is None else f"{100 * share:.1f} %"])
                if run.get("mix") and not mixes:
                    mixes = [arm, run["mix"]]
        uses = [arm for arm in study.downstream.get("arms", []) if arm != "real"]
        section.paragraphs.append(
            "The classifiers: the " + code("real") + " arm trained on real images only"
            + (f"; {', '.join(code(a) for a in uses)} trained with synthetic images" if uses else "")
            + ". Every arm was selected on the real validation split and tested once on the real test split "
            "(downstream/compare.json)."
        )
        if rows:
            section.tables.append(Table("Training images per classifier run (downstream/<arm>/seed-<seed>/metrics.json)",
                                        ["arm", "seed", "real", "synthetic", "synthetic share"], rows))
        if mixes:
            arm, mix = mixes
            config = ((study.downstream_config or {}).get("downstream") or {}).get("mix") or {}
            section.tables.append(Table(
                f"Synthetic images per skin type in the {arm} arm (its metrics.json: mix; setting "
                f"synthetic_share={config.get('synthetic_share', '—')})",
                ["skin type", "real", "synthetic available", "synthetic used", "synthetic share"],
                [[str(group), fmt(v.get("real")), fmt(v.get("synthetic_available")), fmt(v.get("synthetic_used")),
                  "—" if v.get("share") is None else f"{100 * float(v['share']):.1f} %"] for group, v in mix.items()],
            ))
    else:
        section.paragraphs.append("The classifiers: stage not run (downstream/compare.json is absent).")
    section.paragraphs.append("<strong>Every image of the synthetic set is generated by the model above, not a photograph "
                              "of a patient; synthetic images must not be presented or used as real.</strong>")
    return section


def run_section(study: StudyOutputs) -> Section | None:
    """The stages of ``fairsynth run`` with their fingerprints and times; None without run-state.json."""
    if not study.run_state:
        return None
    section = Section("run", "Stages of this run")
    rows = []
    for name, state in study.run_state.items():
        finished = state.get("finished") and state.get("finished") == state.get("started")
        status = "finished" if finished else ("running" if name == "report" else "not finished")
        rows.append([name, status, str(state.get("started") or "—"), fmt(state.get("seconds")), str(state.get("finished_at") or "—")])
    section.tables.append(Table("run-state.json", ["stage", "status", "fingerprint", "seconds", "finished at"], rows))
    return section


#: The page's sections in order: the answer first, then what a reader looks at next (the downstream
#: protocols, the synthetic set, its metrics), then the study's inputs and steps; a builder
#: returning None leaves its section out.
SECTIONS: tuple[Callable[[StudyOutputs], Section | None], ...] = (
    verdict_section, downstream_section, generation_section, evaluation_section, dataset_section, training_section,
    filter_section, memorisation_section, sweep_section, model_card_section, run_section,
)
