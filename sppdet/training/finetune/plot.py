"""The training curve of a fine-tuning run as a PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_training_curve(history: Sequence[Mapping[str, float]],
                        val_history: Sequence[Mapping[str, float]],
                        path: str | os.PathLike[str], *, title: str = "fine-tuning",
                        best_iteration: int | None = None) -> Path:
    """Write a PNG: training and validation loss (left), accuracies (right) vs iteration."""
    from sppdet.plotting import pyplot, save_png

    plt = pyplot()

    path = Path(path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if history:
        its = [h["iteration"] for h in history]
        ax_loss.plot(its, [h["loss"] for h in history], label="train (mean over log interval)")
        ax_acc.plot(its, [h["accuracy"] for h in history], label="train")
    if val_history:
        its = [v["iteration"] for v in val_history]
        ax_loss.plot(its, [v["loss"] for v in val_history], "o-", label="validation")
        ax_acc.plot(its, [v["accuracy"] for v in val_history], "o-", label="validation")
        ax_acc.plot(its, [v["fg_accuracy"] for v in val_history], "s--",
                    label="validation, positives")
    if best_iteration is not None:
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_iteration, color="grey", linestyle=":", label="selected")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("softmax loss")
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0.0, 1.0)
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)
