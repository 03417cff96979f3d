"""Image intake: every common format becomes RGB with EXIF orientation applied; each kind of
bad input is refused with its own code and a clear message."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from embedder.intake import HEIF_SUPPORTED, ImageIntakeError, decode_image, is_grayscale, load_image


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def colour_image(size=(80, 60)) -> Image.Image:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, size[0] // 2, size[1]))
    return image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP"])
def test_common_formats_decode_to_rgb(fmt):
    image = decode_image(encoded(colour_image(), fmt))
    assert image.mode == "RGB"
    assert image.size == (80, 60)


@pytest.mark.skipif(not HEIF_SUPPORTED, reason="pillow-heif not installed")
def test_heic_decodes_to_rgb():
    image = decode_image(encoded(colour_image(), "HEIF"))
    assert image.mode == "RGB"


@pytest.mark.parametrize(
    ("mode", "colour"),
    [
        ("L", 128),
        ("P", 3),
        ("RGBA", (10, 200, 10, 255)),
        ("LA", (90, 255)),
        ("CMYK", (0, 255, 255, 0)),
        ("I;16", 40000),
    ],
)
def test_other_colour_modes_become_rgb(mode, colour):
    image = Image.new(mode, (40, 40), colour)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    out = decode_image(encoded(image, fmt))
    assert out.mode == "RGB"


def test_transparent_pixels_are_composited_on_white():
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    out = decode_image(encoded(image, "PNG"))
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = colour_image((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(encoded(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (40, 80)


def test_load_image_reads_paths_and_file_objects(tmp_path):
    path = tmp_path / "photo.png"
    colour_image().save(path)
    assert load_image(path).size == (80, 60)
    with path.open("rb") as handle:
        assert load_image(handle).size == (80, 60)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"this is a text file, not a photo", "not_an_image"),
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not_an_image"),
    ],
)
def test_non_images_are_refused(data, code):
    with pytest.raises(ImageIntakeError) as info:
        load_image(data)
    assert info.value.code == code


def test_truncated_jpeg_is_refused_as_truncated():
    data = encoded(colour_image((400, 300)), "JPEG", quality=95)
    with pytest.raises(ImageIntakeError) as info:
        decode_image(data[: len(data) // 2], label="half.jpg")
    assert info.value.code == "truncated"
    assert "half.jpg" in str(info.value)


def test_corrupt_png_is_refused():
    data = bytearray(encoded(colour_image((200, 200)), "PNG"))
    data[60:120] = b"\x00" * 60  # damage the compressed stream
    with pytest.raises(ImageIntakeError) as info:
        decode_image(bytes(data))
    assert info.value.code in {"corrupt", "truncated"}


def test_tiny_images_are_refused_with_their_size():
    with pytest.raises(ImageIntakeError, match=r"20x50") as info:
        decode_image(encoded(Image.new("RGB", (20, 50)), "PNG"))
    assert info.value.code == "too_small"


def test_decompression_bombs_are_refused_before_decoding():
    bomb = encoded(Image.new("L", (6000, 6000)), "PNG")  # 36 Mpx of zeros: a few KB on disk
    assert len(bomb) < 200_000
    with pytest.raises(ImageIntakeError) as info:
        decode_image(bomb, max_pixels=10_000_000)
    assert info.value.code == "too_many_pixels"


def test_missing_file_is_reported_by_name(tmp_path):
    with pytest.raises(ImageIntakeError, match=r"missing\.jpg") as info:
        load_image(tmp_path / "missing.jpg")
    assert info.value.code == "not_found"


def test_grayscale_detection():
    assert is_grayscale(Image.new("RGB", (50, 50), (90, 90, 90)))
    assert not is_grayscale(colour_image())
