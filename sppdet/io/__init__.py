"""Artifacts on disk.

- :mod:`~sppdet.io.records`: how each artifact was made (``X.record.json``), and whether it
  is finished and up to date.
- :mod:`~sppdet.io.atomic`: atomic, durable writes (temporary name, fsync, rename); a write
  the file system refuses is a ``StorageError`` naming the file.
- :mod:`~sppdet.io.locks`: one writer per artifact (``flock``).
- :mod:`~sppdet.io.item_store`: resumable per-image outputs merged into one HDF5 file.
- :mod:`~sppdet.io.cleanup`: what killed runs left in a work dir (``sppdet clean``).
- :mod:`~sppdet.io.faults`: named fault points for crash and full-disk tests
  (``SPPDET_FAULT``).
- :mod:`~sppdet.io.checkpoints`: ``.pt`` files tagged with a format, a version and a run.
- :mod:`~sppdet.io.hashing`: the SHA-256 of a file.
- :mod:`~sppdet.io.npz`: ``.npz`` files written to exactly the name given.
- :mod:`~sppdet.io.closing`: ``with obj:`` closes the file or lock it holds.
"""
