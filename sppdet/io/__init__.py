"""Artifacts on disk: records, atomic writes, locks, per-item stores, checkpoints."""
