"""A recipe: the whole study in one YAML file, one section per stage.

Recipes open with the command that runs them and comment the knobs that matter (the
torchtune habit); ``recipes/`` ships the reference workflows and a test parses every one.

    recipe = load_recipe("recipes/fairskin_derm.yaml", ["prepare.resolution=[256]"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from fairsynth.config import DataConfig, PrepareConfig, knob, load_config
from fairsynth.downstream.config import DownstreamConfig
from fairsynth.filters.config import FilterConfig
from fairsynth.generation.config import AdapterSpec, GenerateConfig
from fairsynth.metrics.config import EvaluateConfig
from fairsynth.training.config import TrainConfig
from fairsynth.world.derm import WorldConfig


@dataclass
class Recipe:
    """A whole study; each section configures one stage."""

    name: str = knob("study", "Name of the study, used in output folders and reports.")
    seed: int = knob(0, "Global seed.")
    workdir: str = knob("", "Folder for this study's outputs, one subfolder per stage; default runs/<name>.")
    stages: list[str] = knob(
        [], "Stages `fairsynth run` runs, in order, from world, prepare, train, classifier, generate, evaluate, "
        "downstream, curve, ablate, report; empty: world (when the recipe has one), prepare, train, classifier (when "
        "the classifier_confidence filter reads the study's own classifier), generate, downstream, curve and ablate "
        "(when downstream.curve.enabled / downstream.ablate.enabled), report."
    )
    world: WorldConfig | None = knob(
        None, "Generate the procedural dermatology world first (the embedded default's data) "
        "and read it as `data`; leave out for a real dataset."
    )
    data: DataConfig = knob(default_factory=DataConfig, help="The dataset.")
    prepare: PrepareConfig = knob(default_factory=PrepareConfig, help="Preprocessing and splits.")
    train: TrainConfig = knob(default_factory=TrainConfig, help="Fine-tuning.")
    evaluate: EvaluateConfig = knob(default_factory=EvaluateConfig, help="Measuring the synthetic images.")
    generate: GenerateConfig = knob(default_factory=GenerateConfig, help="Generating the balanced synthetic set.")
    filter: FilterConfig = knob(default_factory=FilterConfig, help="Quality checks of the generated images.")
    downstream: DownstreamConfig = knob(
        default_factory=DownstreamConfig, help="The classifier trained on real, synthetic and mixed data, and its fairness."
    )

    def __post_init__(self) -> None:
        # Stage folders default to subfolders of the study's workdir.
        self.workdir = self.workdir or f"runs/{self.name}"
        if self.world is not None and not self.data.path:
            self.data.path = str(Path(self.workdir) / "world" / "fitzpatrick17k.csv")
        self.prepare.output = self.prepare.output or str(Path(self.workdir) / "prepared")
        train = self.train
        train.data = train.data or str(Path(self.prepare.output) / "metadata.jsonl")
        train.output = train.output or str(Path(self.workdir) / "train")
        train.cache_dir = train.cache_dir or str(Path(self.workdir) / "cache")
        train.resolution = train.resolution or list(self.prepare.resolution)
        train.seed = self.seed if train.seed is None else train.seed
        if train.validation.caption_template is None:
            train.validation.caption_template = self.data.caption_template
        evaluate = self.evaluate
        evaluate.real = evaluate.real or str(Path(self.prepare.output) / "metadata.jsonl")
        evaluate.output = evaluate.output or str(Path(self.workdir) / "evaluation")
        evaluate.cache_dir = evaluate.cache_dir or str(Path(self.workdir) / "cache")
        evaluate.seed = self.seed if evaluate.seed is None else evaluate.seed
        generate = self.generate
        generate.output = generate.output or str(Path(self.workdir) / "generated")
        generate.real = generate.real or str(Path(self.prepare.output) / "metadata.jsonl")
        generate.base = generate.base or dataclasses.replace(train.base)
        if generate.adapters is None:
            generate.adapters = [AdapterSpec(path=str(Path(train.output) / "model"))]
        generate.prompt = generate.prompt or self.data.caption_template or "a photo of {label}"
        generate.resolution = generate.resolution or list(train.resolution)
        generate.seed = self.seed if generate.seed is None else generate.seed
        evaluate.synthetic = evaluate.synthetic or str(Path(generate.output) / "metadata.jsonl")
        filters = self.filter
        filters.real = filters.real or generate.real
        filters.train = filters.train or train.data
        filters.cache_dir = filters.cache_dir or str(Path(self.workdir) / "cache")

        downstream = self.downstream
        downstream.real = downstream.real or str(Path(self.prepare.output) / "metadata.jsonl")
        downstream.synthetic = downstream.synthetic or str(Path(generate.output) / "metadata.jsonl")
        downstream.output = downstream.output or str(Path(self.workdir) / "downstream")
        downstream.image_size = downstream.image_size or max(train.resolution)
        if self.world is not None:
            # the world's truth: true images of the synthetic set's cells for the oracle arm, and
            # the external skin-type-balanced test world, prepared like the real images
            downstream.oracle = downstream.oracle or str(Path(downstream.output) / "oracle-images" / "metadata.jsonl")
            if self.world.test_per_type > 0:
                downstream.test_sets.setdefault(WORLD_TEST, str(self.prepared_test_dir / "metadata.jsonl"))
        confidence = filters.options.get("classifier_confidence")
        if confidence is not None and not confidence.get("model"):
            # the real-data classifier of the downstream study, first seed
            confidence["model"] = str(Path(downstream.output) / "real" / f"seed-{downstream.seeds[0]}")
        uses_classifier = self.evaluate.extractor == "classifier" or any(
            metric.partition("@")[2] == "classifier" for metric in self.evaluate.metrics
        )
        if uses_classifier and not self.evaluate.weights.get("classifier"):
            # the same real-data classifier: domain features where Inception knows no dermoscopy
            self.evaluate.weights["classifier"] = str(
                Path(downstream.output) / "real" / f"seed-{downstream.seeds[0]}" / "model.safetensors"
            )

    @property
    def world_dir(self) -> Path:
        return Path(self.workdir) / "world"

    @property
    def world_test_dir(self) -> Path:
        """The external, skin-type-balanced test world (``world.test_per_type`` > 0)."""
        return Path(self.workdir) / "world-test"

    @property
    def prepared_test_dir(self) -> Path:
        """The test world, prepared like the real data."""
        return Path(self.workdir) / "prepared-test"


#: The name of the procedural world's external test set in `downstream.test_sets`.
WORLD_TEST = "world-test"


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe (or the defaults when ``path`` is None) and apply dotted overrides."""
    return load_config(Recipe, path, overrides)


#: Where the recipe of the embedded default (``fairsynth demo``) ships inside the package.
DEMO_RECIPE = Path(__file__).parent / "assets" / "recipes" / "demo.yaml"
