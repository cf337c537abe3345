"""Images as a viewer shows them: every PIL mode becomes the 8-bit RGB a viewer would display (16-bit, 32-bit
int and float greyscale scaled, transparency on white, EXIF orientation applied); animated images are refused;
a blank image is a counted skip of the prompts stage. Every image is built here with PIL and numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rlaifv_core.evals.common import load_image
from rlaifv_core.feedback.prompts import read_prompt_source
from rlaifv_core.images import BadImage, load_image_bytes, to_rgb

from .conftest import b64, good_records, write_jsonl

H, W = 16, 64


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _ramp(low: float, high: float, dtype) -> np.ndarray:
    """A left-to-right gradient from low to high, H rows of W columns."""
    return np.tile(np.linspace(low, high, W), (H, 1)).astype(dtype)


def _grey(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image)
    assert image.mode == "RGB" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


def test_16_bit_png_and_32_bit_int_tiff_are_scaled_by_their_depth():
    """Today's `convert("RGB")` clips these to 255: a white picture. A viewer shows the gradient."""
    values = _ramp(0, 65535, np.uint16)
    png = _encode(Image.fromarray(values))
    assert Image.open(io.BytesIO(png)).mode == "I;16"
    grey = _grey(load_image_bytes(png))
    assert (np.abs(grey - np.rint(values / 257.0)) <= 1).all()
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 50
    as_int32 = _encode(Image.fromarray(values.astype(np.int32)), "TIFF")  # 16-bit values in a 32-bit int image
    assert Image.open(io.BytesIO(as_int32)).mode == "I"
    assert (np.abs(_grey(load_image_bytes(as_int32)) - np.rint(values / 257.0)) <= 1).all()
    wide = _ramp(-1_000_000, 3_000_000, np.int32)  # beyond 16 bits: its real range
    grey = _grey(load_image_bytes(_encode(Image.fromarray(wide), "TIFF")))
    assert (np.abs(grey - np.rint((wide + 1_000_000) / 4_000_000 * 255)) <= 1).all()


def test_float_tiff_is_scaled_from_0_1_or_its_real_range():
    """Today's `convert("RGB")` of 0..1 floats gives 0 and 1: a black picture."""
    unit = _ramp(0.0, 1.0, np.float32)
    tiff = _encode(Image.fromarray(unit), "TIFF")
    assert Image.open(io.BytesIO(tiff)).mode == "F"
    grey = _grey(load_image_bytes(tiff))
    assert (np.abs(grey - np.rint(unit * 255)) <= 1).all() and grey.max() == 255
    celsius = _ramp(-40.0, 60.0, np.float32)
    celsius[0, 0] = np.nan  # a missing reading: shown as the minimum, not a crash
    grey = _grey(load_image_bytes(_encode(Image.fromarray(celsius), "TIFF")))
    assert grey[0, 0] == 0 and (np.abs(grey[1] - np.rint((celsius[1] + 40) / 100 * 255)) <= 1).all()


def test_transparency_is_composited_on_white():
    """A transparent background is white, as a viewer on a white page shows it (today: the hidden colour)."""
    rgba = np.zeros((H, W, 4), np.uint8)  # transparent black ...
    rgba[:, : W // 2] = (200, 0, 0, 255)  # ... beside opaque red
    rgba[:, W // 2:, 3] = 0
    palette = Image.new("P", (W, H), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, W // 2, H))
    la = Image.fromarray(np.dstack([np.full((H, W), 50, np.uint8), np.zeros((H, W), np.uint8)]), "LA")
    cases = {
        "RGBA": _encode(Image.fromarray(rgba, "RGBA")),
        "P + tRNS": _encode(palette, transparency=0),
        "LA": _encode(la),
        "GIF": _encode(palette, "GIF", transparency=0),
    }
    for name, data in cases.items():
        image = load_image_bytes(data, name)
        assert image.mode == "RGB" and image.getpixel((W - 1, 0)) == (255, 255, 255), name
    assert load_image_bytes(cases["RGBA"]).getpixel((0, 0)) == (200, 0, 0)
    assert load_image_bytes(cases["P + tRNS"]).getpixel((0, 0)) == (0, 0, 255)
    half = Image.new("RGBA", (2, 2), (0, 0, 0, 128))  # half-transparent black on white: mid grey
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)


def test_other_colour_spaces_become_their_rgb():
    """A guard (PIL's own conversions, right today): CMYK, LAB, HSV and 1-bit keep their colours."""
    cmyk = load_image_bytes(_encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=100))
    assert all(abs(a - b) <= 3 for a, b in zip(cmyk.getpixel((4, 4)), (0, 255, 255)))  # cyan
    lab = load_image_bytes(_encode(Image.new("LAB", (8, 8), (128, 128, 128)), "TIFF"))
    assert all(abs(v - 119) <= 2 for v in lab.getpixel((4, 4)))  # L* 50 is sRGB grey 119
    assert to_rgb(Image.new("HSV", (2, 2), (0, 255, 255))).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    """A phone photo stored landscape with Orientation 6 (rotate 90° clockwise) is shown portrait."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue as stored
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    image = load_image_bytes(data)
    assert image.size == (20, 40)  # width, height: portrait
    top, bottom = image.getpixel((10, 2)), image.getpixel((10, 37))  # stored left is now the top
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_animated_images_are_refused():
    frames = [Image.new("RGB", (8, 8), (80 * i, 0, 0)) for i in range(3)]
    for fmt in ("GIF", "PNG"):  # GIF and APNG
        data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
        with pytest.raises(BadImage, match=r"clip.gif: animated or multi-frame image \(3 frames\)") as info:
            load_image_bytes(data, "clip.gif")
        assert info.value.reason == "animated_image"
    assert load_image_bytes(_encode(frames[1], "GIF")).getpixel((0, 0)) == (80, 0, 0)  # one frame is fine


def test_blank_and_animated_prompts_are_counted_skips_and_deep_images_are_not_duplicates(tmp_path):
    """Through the prompts stage: a one-colour image (also after decoding) and an animated one are counted
    skips naming the row; two different 16-bit images stay two prompts (today: both white, one skipped as a
    duplicate of the other)."""
    good = good_records(1)
    deep = [_encode(Image.fromarray(_ramp(0, 65535, np.uint16))), _encode(Image.fromarray(_ramp(65535, 0, np.uint16)))]
    white = _encode(Image.new("RGB", (W, H), (255, 255, 255)))
    constant_float = _encode(Image.fromarray(np.full((H, W), 7.5, np.float32)), "TIFF")
    frames = [Image.new("RGB", (8, 8), (0, 90 * i, 0)) for i in range(2)]
    animated = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    rows = good + [{"ds_question_id": f"d{i}", "image": b64(data), "question": "describe the image ."}
                   for i, data in enumerate(deep + [white, constant_float, animated])]
    frame, counts = read_prompt_source(str(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert list(frame["ds_question_id"]) == ["q0", "d0", "d1"]
    assert "skipped_duplicate_prompt" not in counts
    assert counts["skipped_blank_image"] == 2 and counts["skipped_animated_image"] == 1
    assert any(e.startswith("row 3:") and "blank image (every pixel is RGB (255, 255, 255)" in e
               for e in counts["examples"])
    assert any(e.startswith("row 4:") and "blank image" in e for e in counts["examples"])
    assert any(e.startswith("row 5:") and "animated" in e for e in counts["examples"])
    assert load_image_bytes(white).size == (W, H)  # outside the prompts stage a blank image still loads


def test_benchmark_images_are_read_the_same_way(tmp_path):
    """Eval rows (image paths or base64) go through the same conversion: a 16-bit benchmark image is not white."""
    values = _ramp(0, 65535, np.uint16)
    deep = _encode(Image.fromarray(values))
    (tmp_path / "deep.png").write_bytes(deep)
    for row in ({"image_path": "deep.png"}, {"image": b64(deep)}):
        assert (np.abs(_grey(load_image(row, data_root=tmp_path)) - np.rint(values / 257.0)) <= 1).all()
