"""Pivotal tuning: textual inversion, then a LoRA around the learned tokens, then both."""

from fairsynth.methods.pivotal.method import Pivotal, PivotalConfig

__all__ = ["Pivotal", "PivotalConfig"]
