"""The file SHA-256 helper against hashlib on the whole bytes."""

import hashlib

import numpy as np
import pytest

from sppdet.io.hashing import file_sha256


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 1000, (1 << 20) + 3])
def test_file_sha256_equals_hashlib_on_the_whole_bytes(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == expected
    assert file_sha256(str(path), chunk_bytes=7) == expected  # many blocks, a partial last one


def test_a_changed_byte_changes_the_digest_and_a_missing_file_raises(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    before = file_sha256(path)
    path.write_bytes(b"abd")
    assert file_sha256(path) != before
    # the FIPS 180-2 example: SHA-256("abc")
    assert before == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing.bin")
