"""fairsynth: balanced, audited synthetic images for small and skewed datasets."""

__version__ = "0.1.0"
