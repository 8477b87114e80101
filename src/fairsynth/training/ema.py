"""An exponential moving average of the trainable parameters, named so it survives phases and resumes.

diffusers' :class:`~diffusers.training_utils.EMAModel` averages one fixed list of
parameters. A method may train different parameters in different phases (pivotal tuning:
tokens, then LoRA, then both), so :class:`TrainableEMA` keeps one EMAModel over the current
phase's parameters and remembers every average by parameter name: a parameter that keeps
training keeps its average across a phase change, one that stops keeps its last average,
a new one starts from its current value.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from diffusers.training_utils import EMAModel


class TrainableEMA:
    """EMA of named parameters; ``names`` maps ``id(parameter)`` to a stable name."""

    def __init__(self, decay: float, names: dict[int, str]) -> None:
        self.decay = decay
        self.names = names
        self.params: list[torch.nn.Parameter] = []
        self.model: EMAModel | None = None
        self.finished: dict[str, torch.Tensor] = {}  # averages of parameters no phase trains now
        self.optimization_step = 0

    def track(self, params: list[torch.nn.Parameter], state: dict[str, torch.Tensor] | None = None) -> None:
        """Average ``params`` from now on (start of a phase); ``state``: saved averages by name."""
        known = dict(self.averages())
        known.update(state or {})
        self.params = list(params)
        self.model = EMAModel(self.params, decay=self.decay)
        self.model.optimization_step = self.optimization_step
        for shadow, param in zip(self.model.shadow_params, self.params):
            saved = known.pop(self.names[id(param)], None)
            if saved is not None:
                shadow.copy_(saved.to(shadow))
        self.finished = known

    def step(self) -> None:
        assert self.model is not None, "call track() first"
        self.model.step(self.params)
        self.optimization_step = self.model.optimization_step

    def averages(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.finished.items()
        if self.model is not None:
            for shadow, param in zip(self.model.shadow_params, self.params):
                yield self.names[id(param)], shadow

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, int | float]]:
        """(averages by name, {"optimization_step", "decay"}) for a checkpoint."""
        tensors = {name: tensor.detach().clone() for name, tensor in self.averages()}
        return tensors, {"optimization_step": self.optimization_step, "decay": self.decay}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, int | float]) -> None:
        self.optimization_step = int(meta["optimization_step"])
        self.track(self.params, tensors)

    def copy_to_parameters(self, all_params: dict[str, torch.nn.Parameter]) -> None:
        """Write every average into its parameter (end of training: export the EMA weights)."""
        with torch.no_grad():
            for name, tensor in self.averages():
                all_params[name].copy_(tensor.to(all_params[name]))

    @contextlib.contextmanager
    def swapped_in(self, all_params: dict[str, torch.nn.Parameter]) -> Iterator[None]:
        """The averages in the parameters for the duration (validation), the trained values after."""
        backup = {name: all_params[name].detach().clone() for name, _ in self.averages()}
        self.copy_to_parameters(all_params)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in backup.items():
                    all_params[name].copy_(tensor)
