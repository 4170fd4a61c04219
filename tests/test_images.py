"""adain_np.images: loading every PIL mode, the torchvision transforms, saving."""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from adain_np import images
from adain_np.images import (
    ImageError, center_crop, is_image_file, list_images, load_image, random_crop,
    resize_exact, resize_shorter, sample_images, sample_path, save_image, to_tensor, to_uint8,
)


def save_as(img, path, fmt):
    """Save `img` and check the file really opens in the same mode (else the test tests nothing)."""
    img.save(path, format=fmt)
    with Image.open(path) as reopened:
        assert reopened.mode == img.mode, f"{fmt} file opened as {reopened.mode}, not {img.mode}"
    return path


def row_pixels(img):
    """Pixels of a one-row RGB image as a list of (r, g, b)."""
    assert img.mode == "RGB"
    return [tuple(int(v) for v in p) for p in np.asarray(img)[0]]


# ---------------------------------------------------------------- modes

def test_gray_modes_to_rgb(tmp_path):
    gray = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L")
    got = load_image(save_as(gray, tmp_path / "l.png", "PNG"))
    assert row_pixels(got) == [(0, 0, 0), (77, 77, 77), (255, 255, 255)]

    gray_alpha = Image.merge("LA", [gray, Image.new("L", gray.size, 10)])
    got = load_image(save_as(gray_alpha, tmp_path / "la.png", "PNG"))
    assert row_pixels(got) == [(0, 0, 0), (77, 77, 77), (255, 255, 255)]

    bilevel = Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint8)).convert("1")
    got = load_image(save_as(bilevel, tmp_path / "one.png", "PNG"))
    assert row_pixels(got) == [(0, 0, 0), (255, 255, 255), (0, 0, 0)]


def test_palette_modes_to_rgb(tmp_path):
    palette = [10, 200, 30, 250, 0, 120] + [0] * (256 * 3 - 6)
    indexed = Image.frombytes("P", (3, 1), bytes([0, 1, 0]))
    indexed.putpalette(palette)
    got = load_image(save_as(indexed, tmp_path / "p.png", "PNG"))
    assert row_pixels(got) == [(10, 200, 30), (250, 0, 120), (10, 200, 30)]

    # PA cannot be written as PNG; TIFF keeps it.
    indexed_alpha = Image.new("PA", (3, 1))
    indexed_alpha.putpalette(palette)
    indexed_alpha.putpixel((1, 0), (1, 0))
    got = load_image(save_as(indexed_alpha, tmp_path / "pa.tif", "TIFF"))
    assert row_pixels(got) == [(10, 200, 30), (250, 0, 120), (10, 200, 30)]


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (200, 100, 50, 0))
    rgba.putpixel((1, 0), (1, 2, 3, 255))
    got = load_image(save_as(rgba, tmp_path / "rgba.png", "PNG"))
    # Alpha 0 keeps the stored colour: compositing on black would give (0, 0, 0).
    assert row_pixels(got) == [(200, 100, 50), (1, 2, 3)]


def test_cmyk_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (3, 1), (0, 255, 255, 0))  # full magenta and yellow: red
    cmyk.putpixel((1, 0), (0, 0, 0, 255))  # black
    cmyk.putpixel((2, 0), (0, 0, 0, 0))  # paper white
    got = load_image(save_as(cmyk, tmp_path / "cmyk.tif", "TIFF"))
    assert row_pixels(got) == [(255, 0, 0), (0, 0, 0), (255, 255, 255)]


@pytest.mark.parametrize("mode, fmt, name", [
    ("I;16", "PNG", "i16.png"), ("I;16", "TIFF", "i16.tif"), ("I;16B", "TIFF", "i16b.tif"),
])
def test_16bit_is_scaled_not_clipped(tmp_path, mode, fmt, name):
    img = Image.new(mode, (5, 1))
    for x, value in enumerate([0, 257, 32768, 65535, 128]):
        img.putpixel((x, 0), value)
    got = load_image(save_as(img, tmp_path / name, fmt))
    # round(v / 257): 257 -> 1, 32768 -> 127.5 -> 128 (PIL's convert clips it to 255),
    # 65535 -> 255, 128 -> 0.498 -> 0.
    assert [p[0] for p in row_pixels(got)] == [0, 1, 128, 255, 0]
    assert all(r == g == b for r, g, b in row_pixels(got))


def test_32bit_int_mode(tmp_path):
    # Values within 0..65535: 16-bit data in an I image, scaled like 16-bit.
    small = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))
    assert small.mode == "I"
    got = load_image(save_as(small, tmp_path / "i_small.tif", "TIFF"))
    assert [p[0] for p in row_pixels(got)] == [0, 128, 255]

    # Beyond 16 bits: 0..2**31-1 -> 0..255, negatives -> 0.
    # 2**30 * 255 / (2**31 - 1) = 127.50000006 -> 128; 65535 * 255 / (2**31 - 1) = 0.0078 -> 0.
    large = Image.fromarray(np.array([[2**31 - 1, 2**30, -5, 65535]], dtype=np.int32))
    got = load_image(save_as(large, tmp_path / "i_large.tif", "TIFF"))
    assert [p[0] for p in row_pixels(got)] == [255, 128, 0, 0]


def test_float_mode(tmp_path):
    values = np.array([[0.4, 0.6, 254.7, 300.0, -3.0, np.nan]], dtype=np.float32)
    img = Image.fromarray(values)
    assert img.mode == "F"
    got = load_image(save_as(img, tmp_path / "f.tif", "TIFF"))
    # PIL's 0..255 scale, rounded and clipped; NaN -> 0.
    assert [p[0] for p in row_pixels(got)] == [0, 1, 255, 255, 0, 0]


def test_rgb_passes_through_exactly(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)  # (H, W, 3)
    got = load_image(save_as(Image.fromarray(pixels), tmp_path / "rgb.png", "PNG"))
    np.testing.assert_array_equal(np.asarray(got), pixels)


# ---------------------------------------------------------------- EXIF, errors

def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # (H, W, 3): 40 wide, 20 high
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif)

    got = load_image(path)
    assert got.size == (20, 40)  # (w, h): now portrait
    # A clockwise quarter turn carries the left (red) half to the top.
    top, bottom = got.getpixel((10, 8)), got.getpixel((10, 32))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def assert_one_line_error_naming(path, excinfo):
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message


def test_non_image_file_raises_image_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not an image\n")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error_naming(path, excinfo)
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("fmt, name", [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
def test_truncated_file_raises_image_error(tmp_path, fmt, name):
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error_naming(path, excinfo)


def test_corrupt_png_data_raises_image_error(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 4: idat + 20] = b"\xff" * 16  # garble the compressed pixel data
    path = tmp_path / "garbled.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error_naming(path, excinfo)


def test_missing_file_and_directory_raise_image_error(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "absent.jpg")
    assert_one_line_error_naming(tmp_path / "absent.jpg", excinfo)
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path)
    assert_one_line_error_naming(tmp_path, excinfo)


# ---------------------------------------------------------------- transforms

def coordinate_image(width, height):
    """RGB image whose pixel (x, y) is (x, y, 7): crops can be located from their content."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)  # (H, W, 3)
    pixels[..., 0] = np.arange(width)[None, :]
    pixels[..., 1] = np.arange(height)[:, None]
    pixels[..., 2] = 7
    return Image.fromarray(pixels)


def test_resize_shorter_uses_int_truncation():
    img = Image.new("RGB", (517, 333))  # (w, h): landscape
    # Longer side: int(512 * 517 / 333) = int(264704 / 333) = int(794.907...) = 794,
    # since 333 * 794 = 264402 <= 264704 < 264735 = 333 * 795.
    assert resize_shorter(img, 512).size == (794, 512)
    portrait = Image.new("RGB", (333, 517))
    assert resize_shorter(portrait, 512).size == (512, 794)
    # int(256 * 1000 / 999) = int(256.256) = 256.
    assert resize_shorter(Image.new("RGB", (1000, 999)), 256).size == (256, 256)
    # Square: both sides to size. Upscaling works the same way: int(300 * 30 / 20) = 450.
    assert resize_shorter(Image.new("RGB", (40, 40)), 31).size == (31, 31)
    assert resize_shorter(Image.new("RGB", (30, 20)), 300).size == (450, 300)


def test_resize_shorter_size_zero_and_equal_keep_the_image():
    img = Image.new("RGB", (517, 333))
    assert resize_shorter(img, 0) is img
    assert resize_shorter(img, 333) is img


def test_resize_is_pil_bilinear():
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (33, 51, 3), dtype=np.uint8))
    got = np.asarray(resize_shorter(img, 20))
    # int(20 * 51 / 33) = int(30.909) = 30
    expected = np.asarray(img.resize((30, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, np.asarray(img.resize((30, 20), Image.Resampling.NEAREST)))


def test_resize_exact_takes_height_then_width():
    img = Image.new("RGB", (517, 333))
    assert resize_exact(img, (512, 512)).size == (512, 512)
    assert resize_exact(img, (100, 200)).size == (200, 100)  # (h, w) in, PIL reports (w, h)


def test_center_crop_offsets_round_half_to_even():
    # Width 9, crop 4: (9 - 4) / 2 = 2.5 -> 2. Height 7, crop 4: 1.5 -> 2.
    crop = np.asarray(center_crop(coordinate_image(9, 7), 4))
    assert crop.shape == (4, 4, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (2, 2)  # (x, y) of the top-left pixel
    # Width 11: 3.5 -> 4. Crop given as (h, w) = (3, 5): height 7 -> (7 - 3) / 2 = 2.
    crop = np.asarray(center_crop(coordinate_image(11, 7), (3, 5)))
    assert crop.shape == (3, 5, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (3, 2)  # (11 - 5) / 2 = 3


def test_center_crop_pads_with_zeros_when_too_small():
    img = coordinate_image(3, 2)  # (w, h)
    crop = np.asarray(center_crop(img, (5, 6)))  # (h, w)
    assert crop.shape == (5, 6, 3)
    # Left pad (6 - 3) // 2 = 1, top pad (5 - 2) // 2 = 1; the rest goes right / bottom.
    np.testing.assert_array_equal(crop[1:3, 1:4], np.asarray(img))
    mask = np.ones((5, 6), dtype=bool)
    mask[1:3, 1:4] = False
    assert (crop[mask] == 0).all()


def test_center_crop_pads_one_side_and_crops_the_other():
    img = coordinate_image(10, 2)
    crop = np.asarray(center_crop(img, 4))
    assert crop.shape == (4, 4, 3)
    # Height padded to 4 (one row of zeros above, one below); width cropped at (10 - 4) / 2 = 3.
    assert (crop[0] == 0).all() and (crop[3] == 0).all()
    np.testing.assert_array_equal(crop[1:3, :, 0], [[3, 4, 5, 6], [3, 4, 5, 6]])
    np.testing.assert_array_equal(crop[1:3, :, 1], [[0, 0, 0, 0], [1, 1, 1, 1]])


def test_random_crop_covers_every_position():
    img = coordinate_image(7, 5)
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(400):
        crop = np.asarray(random_crop(img, (3, 4), rng))  # (h, w)
        assert crop.shape == (3, 4, 3)
        left, top = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        # The crop is a contiguous window starting there.
        np.testing.assert_array_equal(crop, np.asarray(img)[top:top + 3, left:left + 4])
        seen.add((top, left))
    assert seen == {(t, l) for t in range(5 - 3 + 1) for l in range(7 - 4 + 1)}


def test_random_crop_same_rng_same_crop_and_errors():
    img = coordinate_image(20, 20)
    a = random_crop(img, 8, np.random.default_rng(4))
    b = random_crop(img, 8, np.random.default_rng(4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert random_crop(img, 20, np.random.default_rng(4)).size == (20, 20)
    with pytest.raises(ValueError):
        random_crop(img, (21, 5), np.random.default_rng(4))


def test_to_tensor_matches_torch_totensor():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)  # (H, W, 3)
    got = to_tensor(Image.fromarray(pixels))
    # torchvision's ToTensor: HWC uint8 -> CHW float32, then div(255).
    expected = torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float32).div(255).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 6, 9)
    np.testing.assert_array_equal(got, expected)  # same float32 division: exact


# ---------------------------------------------------------------- saving

def torch_save_image_pixels(x):
    """torchvision.utils.save_image's conversion, written with torch ops."""
    t = torch.tensor(x)
    if t.dim() == 4:
        t = t.squeeze(0)
    return t.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [False, True])
def test_to_uint8_matches_torch(dtype, batched):
    rng = np.random.default_rng(6)
    x = rng.uniform(-0.2, 1.2, (3, 16, 16)).astype(dtype)  # (3, H, W)
    # Values at the rounding boundaries: (k + 0.5) / 255 and k / 255 and the ends.
    boundary = (np.arange(256) + 0.5) / 255
    x[0, :, :].flat[:256] = boundary.astype(dtype)
    x[1, :, :].flat[:256] = (np.arange(256) / 255).astype(dtype)
    x[2, 0, :4] = np.array([0.0, 1.0, -1e-9, 1 + 1e-9], dtype=dtype)
    if batched:
        x = x[None]
    got = to_uint8(x)
    assert got.dtype == np.uint8 and got.shape == (16, 16, 3)
    np.testing.assert_array_equal(got, torch_save_image_pixels(x))


def test_to_uint8_rejects_other_shapes():
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        to_uint8(np.zeros((4, 4, 3), dtype=np.float32))


def test_save_load_round_trip_png_is_exact(tmp_path):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)  # (H, W, 3)
    x = pixels.transpose(2, 0, 1).astype(np.float32) / 255  # (3, H, W)
    path = tmp_path / "out.png"
    save_image(x, path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), pixels)
    assert os.listdir(tmp_path) == ["out.png"]  # no temporary file left behind


def test_save_jpeg_uses_pil_defaults(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, (1, 3, 24, 32)).astype(np.float32)
    path = tmp_path / "out.JPG"
    save_image(x, path)
    expected = io.BytesIO()
    Image.fromarray(torch_save_image_pixels(x)).save(expected, format="JPEG")
    assert path.read_bytes() == expected.getvalue()


def test_save_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"previous result")

    def failing_save(self, fp, format=None, **params):
        with open(fp, "wb") as handle:
            handle.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(ImageError) as excinfo:
        save_image(np.zeros((3, 4, 4), dtype=np.float32), path)
    assert_one_line_error_naming(path, excinfo)
    assert path.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_unknown_extension_or_directory(tmp_path):
    x = np.zeros((3, 4, 4), dtype=np.float32)
    with pytest.raises(ImageError) as excinfo:
        save_image(x, tmp_path / "out.xyz")
    assert_one_line_error_naming(tmp_path / "out.xyz", excinfo)
    with pytest.raises(ImageError):
        save_image(x, tmp_path / "no_extension")
    with pytest.raises(ImageError):
        save_image(x, tmp_path / "missing_dir" / "out.png")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- folders

def test_list_images_sorted_and_skips_non_images(tmp_path):
    for name in ["b.jpg", "A.PNG", "c.jpeg", "notes.txt", "._b.jpg", "d.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    paths, skipped = list_images(tmp_path)
    assert [os.path.basename(p) for p in paths] == ["A.PNG", "b.jpg", "c.jpeg", "d.tiff"]
    assert skipped == ["._b.jpg", "notes.txt", "sub.png"]
    assert is_image_file("x/photo.JPEG") and is_image_file("p.webp")
    assert not is_image_file("x/readme.md") and not is_image_file(".hidden.png")


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "absent")


# ---------------------------------------------------------------- bundled samples

def test_bundled_samples_load_and_are_listed_in_license():
    content, style = sample_images("content"), sample_images("style")
    assert len(content) >= 4 and len(style) >= 3
    assert sample_images() == content + style
    license_text = open(os.path.join(images.DATA_DIR, "LICENSE.md"), encoding="utf-8").read()
    total_bytes = 0
    colourful_styles = 0
    for path in content + style:
        assert os.path.basename(path) in license_text, path
        total_bytes += os.path.getsize(path)
        img = load_image(path)
        assert min(img.size) == 256
        pixels = np.asarray(img).astype(int)  # (H, W, 3)
        if path in style and np.abs(pixels[..., 0] - pixels[..., 2]).mean() > 20:
            colourful_styles += 1
    assert colourful_styles >= 2
    assert total_bytes < 1_000_000


def test_sample_path_lookup():
    assert sample_path("chelsea").replace(os.sep, "/").endswith("content/chelsea.jpg")
    assert sample_path("style/brick.jpg").replace(os.sep, "/").endswith("style/brick.jpg")
    assert sample_path("swirls.png") == sample_path("swirls")
    with pytest.raises(ValueError):
        sample_path("lena")


def _png_header_only(path, width, height):
    """A PNG whose IHDR says width x height and whose pixel data is missing."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def test_a_16k_image_gets_past_pillows_bomb_limit_and_a_larger_one_does_not(tmp_path):
    # 16384^2 is 268 MP, above Pillow's default 179 MP refusal: the streaming path must be
    # able to open it. The file has no pixels, so decoding fails, but not at the size check.
    path = tmp_path / "big.png"
    _png_header_only(path, 16384, 16384)
    with pytest.raises(images.ImageError) as err:
        images.load_image(path)
    assert "exceeds limit" not in str(err.value) and "\n" not in str(err.value)
    _png_header_only(path, 16384, 16385)
    with pytest.raises(images.ImageError, match="exceeds limit"):
        images.load_image(path)
