"""The data layer: one record type, manifests, dataset readers, validation and preprocessing."""

from fairsynth.data.records import Record, read_manifest, write_manifest

__all__ = ["Record", "read_manifest", "write_manifest"]
