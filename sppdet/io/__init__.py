"""Artifacts on disk.

- :mod:`~sppdet.io.records`: how each artifact was made (``X.record.json``), and whether it
  is finished and up to date.
- :mod:`~sppdet.io.atomic`: atomic writes (temporary name, then rename).
- :mod:`~sppdet.io.locks`: one writer per artifact (``flock``).
- :mod:`~sppdet.io.item_store`: resumable per-image outputs merged into one HDF5 file.
- :mod:`~sppdet.io.checkpoints`: ``.pt`` files tagged with a format, a version and a run.
- :mod:`~sppdet.io.hashing`: the SHA-256 of a file.
- :mod:`~sppdet.io.npz`: ``.npz`` files written to exactly the name given.
- :mod:`~sppdet.io.closing`: ``with obj:`` closes the file or lock it holds.
"""
