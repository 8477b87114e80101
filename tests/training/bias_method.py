"""A minimal method for testing the loop without the real ones: it trains the UNet's biases.

Importing this module registers it as ``test_unet_bias`` in :data:`fairsynth.methods.METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fairsynth.config import knob
from fairsynth.methods import METHODS
from fairsynth.methods.base import Components, InferenceAdapter, Method, MethodConfig, MethodError, Phase


@dataclass
class UNetBiasConfig(MethodConfig):
    """Options of the test method."""

    phases: int = knob(1, "Split training into this many equal phases (to test phase changes).")
    max_label_id: int = knob(-1, "Refuse records whose class is beyond this id (-1: no check); tests method.check.")


@METHODS.register("test_unet_bias", help="Test only: trains the UNet's bias vectors")
class UNetBias(Method):
    """Trains every bias of the UNet; nothing else."""

    Config = UNetBiasConfig

    def check(self, components: Components, records: list) -> None:
        super().check(components, records)
        if self.config.max_label_id >= 0:
            labels = sorted({r.label for r in records})
            if len(labels) - 1 > self.config.max_label_id:
                raise MethodError(f"class id {len(labels) - 1} is out of range (max {self.config.max_label_id})")

    def phases(self, steps: int) -> list[Phase]:
        n = self.config.phases
        sizes = [steps // n + (1 if i < steps % n else 0) for i in range(n)]
        return [Phase(f"part{i}", size) for i, size in enumerate(sizes)]

    @staticmethod
    def _biases(components: Components) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in components.unet.named_parameters() if n.endswith(".bias")}

    def parameter_groups(self, components: Components, phase: Phase, learning_rate: float) -> list[dict[str, Any]]:
        components.freeze_all()
        params = list(self._biases(components).values())
        for param in params:
            param.requires_grad_(True)
        return [{"params": params, "lr": learning_rate}]

    def trainable_state(self, components: Components) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self._biases(components).items()}

    def load_trainable_state(self, components: Components, state: dict[str, torch.Tensor]) -> None:
        biases = self._biases(components)
        with torch.no_grad():
            for name, value in state.items():
                biases[name].copy_(value)

    def export(self, components: Components, out_dir: Path) -> dict[str, Path]:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / "unet_biases.safetensors"
        save_file({k: v.contiguous() for k, v in self.trainable_state(components).items()}, str(path))
        return {"unet_biases": path}

    def load_for_inference(self, pipe: Any, export_dir: Path, *, name: str = "adapter", scale: float = 1.0) -> InferenceAdapter:
        """The trained biases into the pipeline's UNet (every key must name a UNet bias)."""
        if scale != 1.0:
            raise MethodError("test_unet_bias has no strength to scale")
        state = load_file(str(Path(export_dir) / "unet_biases.safetensors"))
        unexpected = [k for k in state if k not in dict(pipe.unet.named_parameters())]
        if unexpected:
            raise MethodError(f"not UNet parameters: {', '.join(unexpected[:5])}")
        pipe.unet.load_state_dict(state, strict=False)
        return InferenceAdapter("test_unet_bias")
