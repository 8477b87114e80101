"""DreamBooth: an instance token bound to a subject, with optional prior preservation."""

from fairsynth.methods.dreambooth.method import DreamBooth, DreamBoothConfig

__all__ = ["DreamBooth", "DreamBoothConfig"]
