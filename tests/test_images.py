"""read_image: every file mode comes back as RGB uint8 with the right orientation."""

import numpy as np
import pytest
from PIL import Image

from sppdet.data.images import image_size, read_image
from sppdet.errors import DataError


def _gradient(h=6, w=8):
    return (np.arange(h * w, dtype=np.uint8).reshape(h, w) * 3)


def test_rgb_jpeg_png(tmp_path):
    pixels = np.stack([_gradient(), _gradient()[::-1], np.full((6, 8), 7, np.uint8)], axis=2)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, pixels)


def test_grayscale_expands_to_three_equal_channels(tmp_path):
    Image.fromarray(_gradient(), mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], _gradient())


def test_palette_and_rgba(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (255, 0, 0)
    rgb[2:] = (0, 0, 255)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [0, 0, 255])
    rgba = np.dstack([rgb, np.full((4, 4), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


def test_16bit_png_keeps_top_byte(tmp_path):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(values).save(tmp_path / "d.png")  # uint16 -> a 16-bit grayscale PNG
    with Image.open(tmp_path / "d.png") as check:
        assert check.mode.startswith("I")
    out = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(out[:, :, 0], (values >> 8).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (4, 5, 3)
    # pure red in CMYK (no cyan, full magenta and yellow)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[0, 0] = 255  # top-left marker in the stored pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    image.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (4, 2, 3)
    assert image_size(tmp_path / "r.jpg") == (2, 4)
    # after a clockwise rotation the stored top-left pixel is at the top-right
    assert out[0, 1].mean() > 128 and out[0, 0].mean() < 128


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(DataError, match="text.jpg: cannot read"):
        read_image(tmp_path / "text.jpg")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_one_pixel_limit_for_sppdet_and_pillow(tmp_path):
    """Case 10: a 108-megapixel image is read (Pillow's own guard refused it at 89 Mpx); above
    MAX_PIXELS the message states the limit."""
    import zlib

    from sppdet.data import images

    Image.new("1", (12000, 9000)).save(tmp_path / "big.png")  # 108 Mpx, 13 kB on disk
    assert read_image(tmp_path / "big.png").shape == (9000, 12000, 3)
    assert image_size(tmp_path / "big.png") == (12000, 9000)
    assert images.MAX_PIXELS == Image.MAX_IMAGE_PIXELS == 200_000_000
    # above the limit, and above twice it (where Pillow itself raises): the same message
    for width, height in ((20000, 10001), (30000, 20000)):
        with open(tmp_path / "huge.png", "wb") as handle:  # a header is all it takes
            Image.new("1", (1, 1)).save(handle, format="PNG")
        data = bytearray((tmp_path / "huge.png").read_bytes())
        data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR size
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # and its checksum
        (tmp_path / "huge.png").write_bytes(bytes(data))
        with pytest.raises(DataError, match=r"huge\.png: .*more than sppdet reads \(200 "
                                            r"megapixels, sppdet\.data\.images\.MAX_PIXELS\)"):
            read_image(tmp_path / "huge.png")
