"""`filter:` — which quality checks run on generated images, and their thresholds.

    filter:
      checks: [resolution, brightness, sharpness, skin_type, realism, memorisation, near_duplicates]
      options:
        sharpness: {min_variance: 50}          # blur threshold; see the stored values first
        realism: {k: 5, max_nn_percentile: 95}
        near_duplicates: {max_cosine: 0.95}
      extractor: null                          # `random` in tests: every check on a random network

Each check's options are validated against its ``Config`` when the recipe is parsed and saved
fully resolved. Folders left empty are derived from the recipe (see :class:`~fairsynth.recipe.Recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairsynth.config import ConfigError, from_dict, knob, to_dict

#: Checks run when a recipe names none.
DEFAULT_CHECKS = ["resolution", "brightness", "sharpness", "skin_type", "realism", "memorisation", "near_duplicates"]


@dataclass
class FilterConfig:
    """`fairsynth filter` / the filtering inside `fairsynth generate`."""

    checks: list[str] = knob(
        list(DEFAULT_CHECKS), "Checks every generated image must pass (`fairsynth ls filters`); [] keeps every image."
    )
    options: dict[str, dict[str, Any]] = knob(
        {}, "Options per check, e.g. {brightness: {min: 0.15}}; checked against each check's Config and saved resolved."
    )
    real: str = knob("", "Manifest of real images (realism references); default generate.real.")
    train: str | None = knob(
        None, "Manifest of the images the generator was trained on (memorisation); default: the rows of split "
        "`train_split` of train.data."
    )
    train_split: str = knob("train", "Split of the training manifest the generator was trained on.")
    extractor: str | None = knob(
        None, "Use this feature extractor for every check that needs one (`random`: tests only, labelled in the report)."
    )
    weights: dict[str, str] = knob({}, "Explicit weights file per extractor, e.g. {dinov2: /w/dinov2_vitl14_pretrain.pth}.")
    extractor_options: dict[str, dict[str, Any]] = knob({}, "Options per extractor, e.g. {lpips: {size: 64}}.")
    download: bool = knob(True, "Download missing extractor weights when the machine is online (never when offline).")
    device: str = knob("auto", "Torch device of the feature extractors; auto: cuda when there is one, else cpu.")
    batch_size: int = knob(32, "Images per feature-extraction batch.")
    cache_dir: str = knob("", "Feature cache (<cache_dir>/features); default <workdir>/cache.")

    def __post_init__(self) -> None:
        from fairsynth.filters import FILTERS

        unknown = [name for name in self.checks if name not in FILTERS]
        if unknown:
            raise ConfigError(f"filter.checks: unknown check {', '.join(map(repr, unknown))}; available: {', '.join(FILTERS.names())}")
        if len(set(self.checks)) != len(self.checks):
            raise ConfigError(f"filter.checks names a check twice: {self.checks}")
        stray = sorted(set(self.options) - set(self.checks))
        if stray:
            raise ConfigError(
                f"filter.options has options for {', '.join(stray)}, which filter.checks does not run "
                f"(checks: {', '.join(self.checks) or 'none'})"
            )
        if self.batch_size < 1:
            raise ConfigError(f"filter.batch_size must be >= 1, got {self.batch_size}")
        self.options = {name: to_dict(self.check_config(name)) for name in self.checks}

    def check_config(self, name: str) -> Any:
        """The check's own Config built from ``options[name]`` (unknown options are errors)."""
        from fairsynth.filters import FILTERS

        return from_dict(FILTERS.get(name).Config, dict(self.options.get(name) or {}), f"filter.options.{name}")

    def build(self) -> list[Any]:
        """One configured instance of every check, in the order of ``checks``."""
        from fairsynth.filters import FILTERS

        return [FILTERS.get(name)(self.check_config(name)) for name in self.checks]

    @property
    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
