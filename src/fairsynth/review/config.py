"""What `fairsynth review export` draws and what `fairsynth review import` accepts.

    ExportConfig(synthetic="runs/derm/generated/metadata.jsonl",
                 real="runs/derm/prepared/metadata.jsonl",
                 output="runs/derm/review", n=500, real_share=0.2, seed=0)
    ImportConfig(acceptance_mean=5.0, acceptance_low_share=0.10)

The acceptance rule is the FairSkin plan's: the synthetic images' mean rating above 5.0 on
the 1-7 scale and fewer than 10 % of their ratings below 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fairsynth.config import ConfigError, knob

#: The rating scale of the protocol (1 = clearly wrong or implausible, 7 = indistinguishable from real).
SCALE = (1, 7)


@dataclass
class ExportConfig:
    """The blinded, stratified sample handed to the raters."""

    synthetic: str = knob(
        "", "Manifest of the synthetic set: metadata.jsonl of `fairsynth generate` (or its candidates.jsonl; "
        "rows a filter rejected are never drawn).",
    )
    real: str = knob("", "Manifest of the prepared real images (metadata.jsonl of `fairsynth prepare`).")
    output: str = knob("", "The rater folder to create; it must be new or empty.")
    key: str | None = knob(
        None, "Where the key (id -> source, file, diagnosis, skin type, seed) goes; default <output>.key.json "
        "beside the rater folder. A path inside the rater folder is refused.",
    )
    n: int = knob(500, "Images in the sample, real ones included.")
    real_share: float = knob(0.2, "Share of real images mixed into the sample, in [0, 1).")
    by: list[str] = knob(
        ["label", "fst"], "Strata fields: `label` (the class, e.g. the diagnosis) and any attribute (fst, fst_group). "
        "Every combination found in the synthetic set gets an equal quota.",
    )
    real_split: str | None = knob(
        "test", "Split the real images come from (the test split: images no generator was trained on); "
        "None, or a manifest without this split: every real image.",
    )
    seed: int = knob(0, "Seed of the draw and of the shuffle; the same seed gives the same folder and key.")
    resolution: int | None = knob(
        None, "Square side (px) every image is fitted to; None: the synthetic images' most common size, applied "
        "to each image of another size, so that image size does not tell real from synthetic.",
    )
    what: str = knob("dermoscopic image", "What a real image is, in the raters' words (7 = indistinguishable from a real ...).")

    def __post_init__(self) -> None:
        for name in ("synthetic", "real", "output"):
            if not str(getattr(self, name)):
                raise ConfigError(f"review export: {name} must be given")
        if self.n <= 0:
            raise ConfigError(f"review export: n must be positive, got {self.n}")
        if not 0.0 <= self.real_share < 1.0:
            raise ConfigError(f"review export: real_share must be in [0, 1), got {self.real_share}")
        if not self.by:
            raise ConfigError("review export: by needs at least one strata field (e.g. [label, fst])")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"review export: resolution must be at least 8 px, got {self.resolution}")

    @property
    def key_path(self) -> Path:
        """The key's path: as given, or ``<output>.key.json`` beside the rater folder."""
        output = Path(self.output)
        return Path(self.key) if self.key else output.parent / f"{output.name}.key.json"


@dataclass
class ImportConfig:
    """How the filled sheets are summarised and judged."""

    acceptance_mean: float = knob(5.0, "The synthetic images' mean rating must exceed this (FairSkin: 5.0).")
    acceptance_low_share: float = knob(
        0.10, "The share of synthetic ratings below `low_below` must stay under this (FairSkin: 10 %).",
    )
    low_below: int = knob(3, "Ratings below this count as poor (3: ratings of 1 and 2).")
    level: float = knob(0.95, "Confidence level of the intervals.")

    def __post_init__(self) -> None:
        if not SCALE[0] <= self.acceptance_mean <= SCALE[1]:
            raise ConfigError(f"review import: acceptance_mean must be on the {SCALE[0]}-{SCALE[1]} scale, got {self.acceptance_mean}")
        if not 0.0 < self.acceptance_low_share <= 1.0:
            raise ConfigError(f"review import: acceptance_low_share must be in (0, 1], got {self.acceptance_low_share}")
        if not SCALE[0] < self.low_below <= SCALE[1]:
            raise ConfigError(f"review import: low_below must be in {SCALE[0] + 1}-{SCALE[1]}, got {self.low_below}")
        if not 0.0 < self.level < 1.0:
            raise ConfigError(f"review import: level must be in (0, 1), got {self.level}")
