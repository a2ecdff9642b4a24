"""save_npz writes to exactly the name given (numpy.savez would append .npz) or to a file."""

import io

import numpy as np

from sppdet.io.npz import save_npz


def test_a_path_keeps_its_name_and_a_file_object_works(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "name": np.str_("fc7")}
    path = tmp_path / ".svm.npz.1234.tmp"  # a temporary name, as an atomic write uses
    save_npz(path, arrays)
    assert [p.name for p in tmp_path.iterdir()] == [".svm.npz.1234.tmp"]
    buffer = io.BytesIO()
    save_npz(buffer, arrays)
    buffer.seek(0)
    for source in (path, buffer):
        with np.load(source, allow_pickle=False) as data:
            assert np.array_equal(data["w"], arrays["w"]) and str(data["name"]) == "fc7"
