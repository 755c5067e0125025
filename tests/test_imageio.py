"""restore.imageio: reading every awkward mode correctly, writing atomically with EXIF/ICC kept."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from restore.imageio import (
    ImageReadError,
    ImageWriteError,
    is_temporary,
    output_suffix,
    read_image,
    write_image,
)


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return np.stack([x, y, 255 - x], axis=2).astype(np.uint8)


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    image.paste(0, (0, 0, 10, 30))
    image.info["transparency"] = 0
    return image


# name, PIL image factory, suffix, expected alpha, check on the decoded RGB
MODES = [
    ("gray", lambda: Image.fromarray(_gradient()[..., 0], "L"), ".png", False,
     lambda rgb: np.array_equal(rgb[..., 0], _gradient()[..., 0]) and np.array_equal(rgb[..., 0], rgb[..., 2])),
    ("bilevel", lambda: Image.fromarray(_gradient()[..., 0] > 128).convert("1"), ".png", False,
     lambda rgb: set(np.unique(rgb)) <= {0, 255}),
    ("palette+transparency", _palette_with_transparency, ".png", True,
     lambda rgb: tuple(rgb[5, 30]) == (10, 200, 30)),
    ("rgba", lambda: Image.fromarray(np.dstack([_gradient(), np.full((30, 40), 77, np.uint8)]), "RGBA"), ".png",
     True, lambda rgb: np.array_equal(rgb, _gradient())),
    ("gray+alpha", lambda: Image.merge("LA", (Image.new("L", (40, 30), 90), Image.new("L", (40, 30), 10))),
     ".png", True, lambda rgb: np.all(rgb == 90)),
    ("16-bit", lambda: Image.fromarray(_gradient()[..., 0].astype(np.uint16) * 257), ".png", False,
     lambda rgb: np.abs(rgb[..., 0].astype(int) - _gradient()[..., 0]).max() <= 1),
    ("cmyk", lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0)), ".jpg", False,
     lambda rgb: rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60),
    ("rgb tiff", lambda: Image.fromarray(_gradient()), ".tiff", False,
     lambda rgb: np.array_equal(rgb, _gradient())),
]


@pytest.mark.parametrize("name, make, suffix, has_alpha, check", MODES, ids=[m[0] for m in MODES])
def test_read_image_converts_modes(tmp_path, name, make, suffix, has_alpha, check):
    path = tmp_path / f"image{suffix}"
    make().save(path)
    loaded = read_image(path)
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (30, 40, 3)
    assert (loaded.alpha is not None) == has_alpha
    assert check(loaded.rgb), name


def test_palette_alpha_values_are_kept(tmp_path):
    path = tmp_path / "p.png"
    _palette_with_transparency().save(path, transparency=0)
    alpha = read_image(path).alpha
    assert alpha[:, :10].max() == 0 and alpha[:, 10:].min() == 255


def _rotated_jpeg(path: Path) -> None:
    pixels = np.full((20, 36, 3), 128, np.uint8)
    pixels[:5, :5] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6            # display rotated 90 degrees clockwise
    exif[0x010F] = "Kodak"      # Make: must survive the round trip
    image.save(path, quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied_and_reset_on_write(tmp_path):
    source = tmp_path / "rotated.jpg"
    _rotated_jpeg(source)
    loaded = read_image(source)
    assert loaded.rgb.shape == (36, 20, 3)                       # upright: stored 36x20 becomes 20 wide
    assert loaded.rgb[:4, -4:, 0].mean() > 200                   # the red corner moved to the top right
    target = write_image(tmp_path / "out.jpg", loaded.rgb, like=loaded)
    with Image.open(target) as written:
        exif = written.getexif()
        assert written.size == (20, 36)
        assert exif[0x0112] == 1 and exif[0x010F] == "Kodak"
        assert written.format == "JPEG"


def test_icc_profile_is_kept(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "icc.png"
    Image.fromarray(_gradient()).save(source, icc_profile=icc)
    loaded = read_image(source)
    write_image(tmp_path / "out.png", loaded.rgb, like=loaded)
    with Image.open(tmp_path / "out.png") as written:
        assert written.info.get("icc_profile") == icc


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"just some text, certainly not pixels", "not an image"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and reason in message and "\n" not in message


def test_truncated_jpeg_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(_gradient(100, 100)).save(path)
    assert read_image(path, max_pixels=10_000).rgb.shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path, max_pixels=9_999)


def test_write_keeps_alpha_in_png_and_uses_quality_95_jpeg(tmp_path):
    rgb = _gradient()
    alpha = np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))
    write_image(tmp_path / "a.png", rgb, alpha)
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "RGBA" and np.array_equal(np.asarray(image)[..., 3], alpha)
    write_image(tmp_path / "b.jpg", rgb)
    with Image.open(tmp_path / "b.jpg") as image:
        assert image.format == "JPEG"
        error = np.abs(np.asarray(image).astype(int) - rgb).mean()
    assert error < 3.0                                             # high quality, not a default-75 encode
    with pytest.raises(ValueError):
        write_image(tmp_path / "c.jpg", rgb, alpha)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous output")

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(ImageWriteError) as caught:
        write_image(target, _gradient())
    assert str(target) in str(caught.value) and "no space left" in str(caught.value)
    assert target.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_written_files_get_normal_permissions_and_temporaries_are_recognised(tmp_path):
    path = write_image(tmp_path / "x.png", _gradient())
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert is_temporary(Path(".x.png.1a2b3c4d.restore-tmp")) and not is_temporary(Path("x.png"))


@pytest.mark.parametrize("name, suffix", [
    ("a.jpg", ".jpg"), ("a.JPEG", ".JPEG"), ("a.png", ".png"), ("a.tif", ".tif"), ("a.webp", ".webp"),
    ("a.gif", ".png"), ("a.bmp", ".png"),
])
def test_output_suffix(name, suffix):
    assert output_suffix(Path(name)) == suffix
