import io

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.errors import UserError
from lora_studio.core.images import IMAGE_EXTENSIONS, ImageError, conversion_notes, image_size, load_rgb


def gradient(w=64, h=48):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1))


def test_extensions_cover_the_usual_formats():
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"} <= IMAGE_EXTENSIONS


def test_plain_rgb_loads_unchanged(tmp_path):
    src = gradient()
    src.save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.array_equal(np.asarray(img), np.asarray(src))
    assert image_size(tmp_path / "a.png") == (64, 48)
    assert conversion_notes(tmp_path / "a.png") == []


def test_truncated_png_fails_with_a_named_reason(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert image_size(path) == (128, 128)  # the header is intact: only a full decode notices
    with pytest.raises(ImageError) as e:
        load_rgb(path)
    assert "cut.png" in e.value.message and "truncated" in e.value.message
    assert e.value.code == "bad_image" and isinstance(e.value, UserError)


def test_truncated_jpeg_fails(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_rgb(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    for fn in (load_rgb, image_size):
        with pytest.raises(ImageError, match=r"empty \(0 bytes\)") as e:
            fn(path)
        assert e.value.path == path


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="notes.png is not an image that can be opened"):
        load_rgb(path)
    with pytest.raises(ImageError):
        image_size(path)


def test_jpeg_named_png_just_works(tmp_path):
    gradient().save(tmp_path / "really_a.png", format="JPEG")
    assert load_rgb(tmp_path / "really_a.png").size == (64, 48)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_rgb(tmp_path / "gone.png")


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    Image.new("CMYK", (32, 16), (0, 255, 255, 0)).save(tmp_path / "print.jpg")  # pure red ink
    img = load_rgb(tmp_path / "print.jpg")
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50
    assert any("CMYK" in n for n in conversion_notes(tmp_path / "print.jpg"))


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    a = np.zeros((8, 16), dtype=np.uint16)
    a[:, :8] = 1000  # dark: clipping would turn it white
    a[:, 8:] = 65535
    src = Image.fromarray(a)
    src.save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    img = load_rgb(tmp_path / "deep.png")
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (4, 4, 4)  # 1000 / 257
    assert img.getpixel((12, 2)) == (255, 255, 255)
    assert any("16-bit" in n for n in conversion_notes(tmp_path / "deep.png"))


def test_greyscale_becomes_rgb(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "grey.png")
    img = load_rgb(tmp_path / "grey.png")
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (77, 77, 77)


def test_rgba_transparency_over_white(tmp_path):
    src = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    src.paste((0, 0, 255, 0), (10, 0, 20, 10))  # right half fully transparent (blue but invisible)
    src.putpixel((0, 0), (0, 0, 0, 128))  # half transparent black
    src.save(tmp_path / "cut_out.png")
    img = load_rgb(tmp_path / "cut_out.png")
    assert img.mode == "RGB"
    assert img.getpixel((15, 5)) == (255, 255, 255)
    assert img.getpixel((5, 5)) == (255, 0, 0)
    assert all(126 <= c <= 128 for c in img.getpixel((0, 0)))
    assert any("transparent" in n for n in conversion_notes(tmp_path / "cut_out.png"))


def test_la_transparency_over_white(tmp_path):
    Image.new("LA", (4, 4), (0, 0)).save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png").getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_transparency_over_white(tmp_path):
    src = Image.new("P", (10, 10), 0)
    src.putpalette([0, 255, 0] + [255, 0, 255] + [0, 0, 0] * 254)
    src.paste(1, (5, 0, 10, 10))
    src.save(tmp_path / "pal.png", transparency=1)  # index 1 (magenta) is transparent
    img = load_rgb(tmp_path / "pal.png")
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (0, 255, 0)
    assert img.getpixel((7, 2)) == (255, 255, 255)
    notes = conversion_notes(tmp_path / "pal.png")
    assert any("palette" in n for n in notes) and any("transparent" in n for n in notes)


def test_gif_and_tiff_and_webp_and_bmp_load(tmp_path):
    src = gradient()
    for ext in ("gif", "tif", "webp", "bmp"):
        src.save(tmp_path / f"x.{ext}")
        img = load_rgb(tmp_path / f"x.{ext}")
        assert img.mode == "RGB" and img.size == (64, 48)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # Stored 40 wide × 20 tall with a red left half; orientation 6 means "turn 90° clockwise to view".
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    src.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert image_size(tmp_path / "phone.jpg") == (20, 40)
    img = load_rgb(tmp_path / "phone.jpg")
    assert img.size == (20, 40)
    # After a clockwise turn the stored left half (red) is on top.
    top, bottom = img.getpixel((10, 5)), img.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60
    assert any("EXIF" in n for n in conversion_notes(tmp_path / "phone.jpg"))


def test_image_size_reads_only_the_header(tmp_path):
    # A huge PNG whose pixels were never written in full still reports its size instantly.
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (1, 2, 3)).save(buf, "PNG")
    (tmp_path / "big.png").write_bytes(buf.getvalue()[:200])
    assert image_size(tmp_path / "big.png") == (3000, 2000)
