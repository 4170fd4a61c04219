"""Streaming stylization (adain_np/streaming.py) is the whole-image computation.

Bands are forced small (8 input rows, one relu4_1 row) and the sizes are odd, so
every image crosses several bands, every conv drops band-edge rows and every ceil-mode
pool sees an odd last row. The reference is stylize.stylize on the whole image.
"""
import io
import os

import numpy as np
import pytest
from PIL import Image

import adain_np
from adain_np import stylize as whole
from adain_np import streaming
from adain_np.backend import NumpyBackend, select_backend
from adain_np.coral import coral
from adain_np.images import resize_shorter, to_uint8
from adain_np.png_rows import PngRowWriter
from adain_np.streaming import ArrayRows, ImageRows, RunningMoments

VGG, DECODER = adain_np.init_vgg_params(0), adain_np.init_decoder_params(0)
BAND = 8  # the smallest band: one relu4_1 row per band
# Per dtype, on the float output (its values reach ~15 with these random weights):
# float32 runs the same ops in a different blocking (GEMM sizes, statistics merged from
# bands in float64 instead of one float32 reduction): ~2e-5 seen, the bound is one
# 8-bit level, 1/255. float64 differs by rounding only: ~3e-14 seen, the bound 1e-9.
TOLERANCE = {np.float32: 1 / 255, np.float64: 1e-9}


def smooth_image(rng, height, width):
    """(3, H, W) float32 in [0, 1]: smooth structure plus noise, so features vary."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / (4 + c) + c) * np.cos(y / (6 - c) - c) for c in range(3)])
    noisy = 0.5 + 0.35 * base + 0.1 * rng.standard_normal((3, height, width))
    return np.clip(noisy, 0, 1).astype(np.float32)


def stream(net, content, styles, min_bands=1, band_rows=BAND, **options):
    bands = list(streaming.stylized_rows(net, ArrayRows(content), [ArrayRows(s) for s in styles],
                                         band_rows=band_rows, **options))
    # The output comes out in bands too (after the networks' latency of a few bands).
    assert len(bands) >= min_bands
    return np.concatenate(bands, axis=1)                            # (3, H_out, W_out)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    # content 101x37 (relu4_1 13x5, output 104x40), styles of other odd sizes
    return smooth_image(rng, 101, 37), smooth_image(rng, 30, 26), smooth_image(rng, 19, 41)


def mask_image():
    mask = np.zeros((101, 37), dtype=np.uint8)
    mask[5:60, 3:20] = 255  # foreground: a block that cuts across bands
    return Image.fromarray(mask, mode="L")


CASES = {
    "plain": dict(),
    "alpha": dict(alpha=0.6),
    "preserve_color": dict(preserve_color=True),
    "interpolation": dict(weights=[0.3, 0.7], alpha=0.8),
    "mask": dict(mask=True, alpha=0.7),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_streamed_equals_whole_image(images, case, dtype):
    options = dict(CASES[case])
    content, style_a, style_b = (im.astype(dtype) for im in images)
    net = adain_np.Net(VGG, DECODER, NumpyBackend(dtype))
    styles = [style_a, style_b] if "weights" in options or "mask" in options else [style_a]
    mask_img = mask_image() if options.pop("mask", False) else None
    alpha, weights = options.get("alpha", 1.0), options.get("weights")
    whole_styles = styles
    if options.get("preserve_color"):
        whole_styles = [coral(s, content).astype(dtype) for s in styles]  # as stylize.main does
    expected = whole.stylize(net, content, whole_styles, alpha, weights, mask_img)
    got = stream(net, content, styles, min_bands=4, mask_img=mask_img, **options)
    assert got.shape == expected.shape == (3, 104, 40)
    assert np.abs(got - expected).max() <= TOLERANCE[dtype], np.abs(got - expected).max()
    # Not vacuous: the output varies far more than the tolerance.
    assert expected.std() > 0.1


def test_band_size_does_not_matter(images):
    content, style, _ = images
    net = adain_np.Net(VGG, DECODER)
    small = stream(net, content, [style], band_rows=8)
    larger = stream(net, content, [style], band_rows=16)  # other band edges, other halos
    assert np.abs(small - larger).max() <= TOLERANCE[np.float32]


def test_sides_already_multiples_of_8():
    rng = np.random.default_rng(5)
    content, style = smooth_image(rng, 40, 24), smooth_image(rng, 16, 16)
    net = adain_np.Net(VGG, DECODER, NumpyBackend(np.float64))
    expected = whole.stylize(net, content.astype(np.float64), [style.astype(np.float64)])
    got = stream(net, content.astype(np.float64), [style.astype(np.float64)])
    assert got.shape == expected.shape == (3, 40, 24)
    assert np.abs(got - expected).max() <= 1e-9


def test_emulator_backend_equals_whole_image():
    """One tiny case on the CUDA kernels, run by the CPU emulator."""
    backend, _ = select_backend("emulator")
    rng = np.random.default_rng(7)
    content, style = smooth_image(rng, 17, 11), smooth_image(rng, 12, 10)
    net = adain_np.Net(VGG, DECODER, backend)
    expected = whole.stylize(adain_np.Net(VGG, DECODER), content, [style], 0.9)  # NumPy, whole
    got = stream(net, content, [style], alpha=0.9)
    assert got.shape == expected.shape == (3, 24, 16)
    # float32 kernels (no FMA contraction on the emulator) against NumPy: one 8-bit level.
    assert np.abs(got - expected).max() <= 1 / 255


# ---------------------------------------------------------------- statistics

def test_running_moments_merge_exactly():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 1000)) * [[1], [10], [0.1], [3]] + [[5], [-2], [0], [1e3]]
    moments, cov = RunningMoments(), RunningMoments(covariance=True)
    for lo, hi in ((0, 1), (1, 8), (8, 500), (500, 501), (501, 1000)):  # uneven, some of one value
        moments.add_values(values[:, lo:hi])
        cov.add_values(values[:, lo:hi])
    mean, std = moments.mean_std(eps=1e-5)
    np.testing.assert_allclose(mean, values.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, np.sqrt(values.var(axis=1, ddof=1) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(cov.variance(), np.cov(values), rtol=1e-10)


def test_feature_statistics_from_backend_mean_std():
    rng = np.random.default_rng(1)
    feat = rng.standard_normal((1, 6, 9, 5)) * 3 + 1                # (1, C, r, w)
    backend = NumpyBackend(np.float64)
    moments = RunningMoments()
    for lo, hi in ((0, 2), (2, 3), (3, 9)):
        moments.add_features(backend, feat[:, :, lo:hi])
    mean, std = moments.mean_std()
    ref_mean, ref_std = adain_np.calc_mean_std(feat)
    np.testing.assert_allclose(mean, ref_mean.ravel(), rtol=1e-12)
    np.testing.assert_allclose(std, ref_std.ravel(), rtol=1e-12)


# ---------------------------------------------------------------- images in and out

def test_png_rows_decode_to_the_same_pixels():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    pixels[10:20] = pixels[10]  # repeated rows and flat runs exercise the Paeth choices
    pixels[:, 5:9] = 17
    buf = io.BytesIO()
    writer = PngRowWriter(buf, 23, 37)
    for lo, hi in ((0, 1), (1, 16), (16, 16), (16, 37)):
        writer.write_rows(pixels[lo:hi])
    writer.close()
    with Image.open(io.BytesIO(buf.getvalue())) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (23, 37)
        np.testing.assert_array_equal(np.asarray(img), pixels)


def test_png_rows_refuses_a_wrong_row_count():
    writer = PngRowWriter(io.BytesIO(), 4, 3)
    writer.write_rows(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2 of its 3 rows"):
        writer.close()
    with pytest.raises(ValueError, match="more than"):
        writer.write_rows(np.zeros((2, 4, 3), np.uint8))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_written_file_is_the_streamed_image(tmp_path, images, ext):
    content, style, _ = images
    net = adain_np.Net(VGG, DECODER)
    path = tmp_path / f"out{ext}"
    shape = streaming.stylize_streaming(net, ArrayRows(content), [ArrayRows(style)], path,
                                        band_rows=BAND, alpha=0.5)
    assert shape == (104, 40)
    expected = to_uint8(whole.stylize(net, content, [style], 0.5))   # (H, W, 3)
    with Image.open(path) as img:
        got = np.asarray(img.convert("RGB"))
    assert got.shape == expected.shape
    if ext == ".png":  # lossless: the pixels themselves, within one level of rounding
        assert np.abs(got.astype(int) - expected).max() <= 1
    else:  # JPEG: lossy, but it is this picture
        assert np.abs(got.astype(int) - expected).mean() < 20
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_unwritable_output_is_an_image_error(tmp_path, images):
    content, style, _ = images
    net = adain_np.Net(VGG, DECODER)
    with pytest.raises(streaming.ImageError, match="does not exist"):
        streaming.stylize_streaming(net, ArrayRows(content), [ArrayRows(style)],
                                    tmp_path / "missing" / "out.png", band_rows=BAND)


def test_shorter_side_size_is_resize_shorters():
    img = Image.new("RGB", (1, 1))
    for width, height in ((640, 480), (480, 640), (37, 45), (1000, 333), (512, 512), (3, 1000)):
        for size in (0, 9, 100, 333, 512):
            expected = resize_shorter(img.resize((width, height)), size).size
            assert streaming.resized_size(width, height, size) == expected


@pytest.mark.parametrize("size,crop", [(0, False), (23, False), (61, False), (23, True)])
def test_image_rows_match_the_whole_image_transform(tmp_path, size, crop):
    rng = np.random.default_rng(4)
    path = tmp_path / "in.png"
    Image.fromarray((smooth_image(rng, 53, 41).transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
    expected = whole.prepare(str(path), size, crop)                # (3, H, W) float32
    rows = ImageRows(path, size, crop)
    assert (rows.height, rows.width) == expected.shape[1:]
    got = np.concatenate([rows.band(lo, hi) for lo, hi in streaming.row_bands(rows.height, BAND)], axis=1)
    assert got.shape == expected.shape
    # A band of Pillow's resize takes the whole resize's taps; only the float box
    # coordinates round differently, which may move a value by one level.
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-7
    if size == 0:
        np.testing.assert_array_equal(got, expected)


def test_image_rows_refuse_tiny_images(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 30)).save(path)
    with pytest.raises(streaming.ImageError, match="at least 9x9"):
        ImageRows(path)


# ---------------------------------------------------------------- 16K, opt-in

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ADAIN_SLOW") != "1", reason="opt-in: set ADAIN_SLOW=1 (hours on 2 cores)")
def test_16k_stylize_completes(tmp_path):
    side = 16384
    content = tmp_path / "content.png"
    # A 16K x 16K PNG written row by row, so the test itself stays small in memory.
    rng = np.random.default_rng(0)
    with open(content, "wb") as f:
        writer = PngRowWriter(f, side, side)
        for row0 in range(0, side, 1024):
            writer.write_rows(rng.integers(0, 256, (1024, side, 3), dtype=np.uint8))
        writer.close()
    style = ArrayRows(smooth_image(rng, 512, 512))
    out = tmp_path / "out.png"
    net = adain_np.Net(VGG, DECODER)
    assert streaming.stylize_streaming(net, ImageRows(content), [style], out) == (side, side)
    with Image.open(out) as img:
        assert img.size == (side, side)


# ---------------------------------------------------------------- the command line

def _cli_files(tmp_path):
    rng = np.random.default_rng(6)
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    for path, (h, w) in ((content, (101, 37)), (style, (30, 26))):
        Image.fromarray((smooth_image(rng, h, w).transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
    return content, style


@pytest.mark.parametrize("extra", [[], ["--preserve_color", "--alpha", "0.7"]])
def test_cli_stream_writes_the_whole_image_pixels(tmp_path, capsys, extra):
    content, style = _cli_files(tmp_path)
    common = ["--content", str(content), "--style", str(style), "--content_size", "0",
              "--style_size", "0", "--save_ext", ".png", "--random_weights", "--device", "cpu"] + extra
    assert whole.main(common + ["--output", str(tmp_path / "whole")]) == 0
    assert "streaming" not in capsys.readouterr().out  # small: the whole-image path
    assert whole.main(common + ["--output", str(tmp_path / "streamed"), "--stream"]) == 0
    assert "streaming content.png" in capsys.readouterr().out
    name = "content_stylized_style.png"
    a, b = (np.asarray(Image.open(tmp_path / d / name)).astype(int) for d in ("whole", "streamed"))
    assert a.shape == b.shape == (104, 40, 3)
    assert np.abs(a - b).max() <= 1


def test_cli_streams_above_max_memory(tmp_path, capsys):
    content, style = _cli_files(tmp_path)
    assert whole.main(["--content", str(content), "--style", str(style), "--random_weights",
                       "--content_size", "0", "--device", "cpu", "--output", str(tmp_path),
                       "--max_memory", "1M"]) == 0
    assert "streaming content.png" in capsys.readouterr().out  # 37x101 needs ~3 MB whole
    with Image.open(tmp_path / "content_stylized_style.jpg") as img:
        assert img.size == (40, 104)


@pytest.mark.parametrize("text", ["abc", "-1G", "0", "nanG"])
def test_cli_refuses_a_bad_max_memory(tmp_path, text):
    content, style = _cli_files(tmp_path)
    with pytest.raises(adain_np.cli.UserError, match="--max_memory"):
        whole.main(["--content", str(content), "--style", str(style), "--random_weights",
                    "--output", str(tmp_path), "--max_memory", text])


def test_parse_memory():
    assert streaming.parse_memory("4G") == 4 << 30
    assert streaming.parse_memory("800m") == 800 << 20
    assert streaming.parse_memory("1.5GiB") == int(1.5 * (1 << 30))
    assert streaming.parse_memory("12345") == 12345
