"""Artifacts on disk.

- :mod:`~sppdet.io.records`: how each artifact was made (``X.record.json``), and whether it
  is finished and up to date.
- :mod:`~sppdet.io.atomic`: atomic writes (temporary name, then rename).
- :mod:`~sppdet.io.locks`: one writer per artifact (``flock``).
- :mod:`~sppdet.io.item_store`: resumable per-image outputs merged into one HDF5 file.
"""
