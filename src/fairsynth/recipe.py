"""A recipe: the whole study in one YAML file, one section per stage.

Recipes open with the command that runs them and comment the knobs that matter (the
torchtune habit); ``recipes/`` ships the reference workflows and a test parses every one.

    recipe = load_recipe("recipes/fairskin_derm.yaml", ["prepare.resolution=[256]"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fairsynth.config import DataConfig, PrepareConfig, knob, load_config
from fairsynth.world.derm import WorldConfig


@dataclass
class Recipe:
    """A whole study; each section configures one stage."""

    name: str = knob("study", "Name of the study, used in output folders and reports.")
    seed: int = knob(0, "Global seed.")
    workdir: str = knob("", "Folder for this study's outputs, one subfolder per stage; default runs/<name>.")
    world: WorldConfig | None = knob(
        None, "Generate the procedural dermatology world first (the embedded default's data) "
        "and read it as `data`; leave out for a real dataset."
    )
    data: DataConfig = knob(default_factory=DataConfig, help="The dataset.")
    prepare: PrepareConfig = knob(default_factory=PrepareConfig, help="Preprocessing and splits.")

    def __post_init__(self) -> None:
        # Stage folders default to subfolders of the study's workdir.
        self.workdir = self.workdir or f"runs/{self.name}"
        if self.world is not None and not self.data.path:
            self.data.path = str(Path(self.workdir) / "world" / "fitzpatrick17k.csv")
        self.prepare.output = self.prepare.output or str(Path(self.workdir) / "prepared")

    @property
    def world_dir(self) -> Path:
        return Path(self.workdir) / "world"


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe (or the defaults when ``path`` is None) and apply dotted overrides."""
    return load_config(Recipe, path, overrides)


#: Where the recipe of the embedded default (``fairsynth demo``) ships inside the package.
DEMO_RECIPE = Path(__file__).parent / "assets" / "recipes" / "demo.yaml"
