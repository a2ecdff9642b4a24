"""The one place that picks matplotlib's backend, and the atomic PNG write."""

import pytest

from sppdet.plotting import pyplot, save_png


def test_pyplot_draws_with_agg_and_save_png_writes_a_png_and_closes(tmp_path):
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "sub" / "curve.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in path.parent.iterdir()) == ["curve.png"]


def test_a_failed_save_leaves_no_file_and_closes_the_figure(tmp_path):
    plt = pyplot()
    fig, _ = plt.subplots()

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="renderer crashed"):
        save_png(fig, tmp_path / "curve.png")
    assert list(tmp_path.iterdir()) == [] and not plt.fignum_exists(fig.number)
