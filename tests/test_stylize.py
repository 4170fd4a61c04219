"""python -m adain_np.stylize against a torch transcription of pytorch-AdaIN's test.py.

The transcription below is test.py's code path with torchvision's transforms and
save_image written out (torchvision is not installed): PIL for Resize/CenterCrop,
torch for ToTensor, the network (tests/torch_reference.py writes net.py's modules out
by hand) and save_image's rounding. Weights are random, saved with
torch.save in both of torch's formats, so the whole loading path runs.

Most runs call main(argv) in-process for speed; exit codes and stderr are checked
in a fresh interpreter, as a user sees them.
"""
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from adain_np import cli
from adain_np.cli import UserError
from adain_np.params import ENCODER_SHAPES, init_decoder_params, init_vgg_params
from adain_np.stylize import MIN_SIDE, backend_for_flag, main
from torch_reference import (adaptive_instance_normalization, calc_mean_std, load, make_decoder,
                             make_vgg)
from test_coral_mask import torch_coral

REPO = Path(__file__).resolve().parents[1]
DOWNLOAD_HINT = "python -m adain_np.weights download"


# ---------------------------------------------------------------- fixtures

def calibrated_decoder_params(vgg_params, content_path, style_path, size=32, target_std=0.2):
    """Random decoder whose output spreads over [0, 1], so that pixel comparisons can fail.

    With He-normal weights the last conv gives values of ~5 +- 5, which save_image clamps
    to 255 almost everywhere; scaled down naively, the picture is nearly flat. Here the
    last conv (linear) is rescaled per colour channel so that, on one stylized test
    picture (computed with torch), each channel has mean 0.5 and std `target_std`.
    """
    decoder = init_decoder_params(3)
    vgg = load(make_vgg()[:31], {k: vgg_params[k] for k in ENCODER_SHAPES})
    body = load(make_decoder()[:-1],  # everything but the last conv
                {k: v for k, v in decoder.items() if not k.startswith("28.")})
    tf = transform_of_test_py(size, False)
    with torch.no_grad():
        content_f = vgg(tf(Image.open(content_path)).unsqueeze(0))
        style_f = vgg(tf(Image.open(style_path)).unsqueeze(0))
        hidden = body(adaptive_instance_normalization(content_f, style_f))
        last = nn.Conv2d(64, 3, 3)
        last.weight.copy_(torch.from_numpy(decoder["28.weight"]))
        last.bias.copy_(torch.from_numpy(decoder["28.bias"]))
        out = last(hidden).double()[0]                                   # (3, H, W)
    mean, std = out.mean(dim=(1, 2)).numpy(), out.std(dim=(1, 2)).numpy()  # (3,)
    scale = target_std / std
    decoder["28.weight"] = (decoder["28.weight"] * scale[:, None, None, None]).astype(np.float32)
    decoder["28.bias"] = ((decoder["28.bias"] - mean) * scale + 0.5).astype(np.float32)
    return decoder


def torch_state(params):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}


def pattern_image(path, width, height, seed):
    """A smooth, colourful RGB picture with some noise, saved losslessly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [0.5 + 0.4 * np.sin(rng.uniform(3, 12) * x + rng.uniform(2, 9) * y + rng.uniform(0, 6))
                for _ in range(3)]
    pixels = np.stack(channels, axis=-1) + 0.08 * rng.standard_normal((height, width, 3))
    Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8), mode="RGB").save(path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stylize")
    content = pattern_image(root / "photo.png", 50, 70, seed=1)
    style = pattern_image(root / "paint.png", 60, 45, seed=3)
    vgg = init_vgg_params(2, full=True)
    decoder = calibrated_decoder_params(vgg, content, style)
    paths = {
        # pair A: vgg in the zip format, decoder in the legacy one; pair B the other way
        "vgg_zip": root / "vgg_zip.pth", "decoder_legacy": root / "decoder_legacy.pth",
        "vgg_legacy": root / "vgg_legacy.pth", "decoder_zip": root / "decoder_zip.pth",
    }
    torch.save(torch_state(vgg), paths["vgg_zip"])
    torch.save(torch_state(vgg), paths["vgg_legacy"], _use_new_zipfile_serialization=False)
    torch.save(torch_state(decoder), paths["decoder_zip"])
    torch.save(torch_state(decoder), paths["decoder_legacy"], _use_new_zipfile_serialization=False)
    paths = {k: str(v) for k, v in paths.items()}
    paths["content"], paths["style"] = content, style
    paths["content2"] = pattern_image(root / "street.png", 64, 40, seed=2)
    paths["style2"] = pattern_image(root / "ink.png", 45, 60, seed=4)
    paths["style3"] = pattern_image(root / "wide.png", 90, 30, seed=5)
    return paths


def weights_args(files, pair="A"):
    if pair == "A":
        return ["--vgg", files["vgg_zip"], "--decoder", files["decoder_legacy"]]
    return ["--vgg", files["vgg_legacy"], "--decoder", files["decoder_zip"]]


def run_main(files, out, *args, pair="A"):
    """main(argv) in-process; returns the exit code (0 expected)."""
    return main([*weights_args(files, pair), "--output", str(out), *map(str, args)])


def read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)  # (H, W, 3)


# ---------------------------------------------------------------- test.py, transcribed

def tv_resize(img, size):
    """torchvision Resize(size) with an int on a PIL image."""
    w, h = img.size
    short, long = min(w, h), max(w, h)
    if short == size:
        return img
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return img.resize((new_w, new_h), Image.BILINEAR)


def tv_center_crop(img, size):
    """torchvision CenterCrop(size), for crops that fit (the only ones used here)."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def tv_to_tensor(img):
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous().float().div(255)


def transform_of_test_py(size, crop):
    def transform(img):
        if size != 0:
            img = tv_resize(img, size)
        if crop:
            img = tv_center_crop(img, size)
        return tv_to_tensor(img)
    return transform


def tv_save_image_array(tensor):
    """torchvision.utils.save_image's pixels for a batch of one (make_grid squeezes it)."""
    grid = tensor.squeeze(0)
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


def torch_style_transfer(vgg, decoder, content, style, alpha=1.0, interpolation_weights=None):
    assert 0.0 <= alpha <= 1.0
    content_f = vgg(content)
    style_f = vgg(style)
    if interpolation_weights:
        _, C, H, W = content_f.size()
        feat = torch.FloatTensor(1, C, H, W).zero_()
        base_feat = adaptive_instance_normalization(content_f, style_f)
        for i, w in enumerate(interpolation_weights):
            feat = feat + w * base_feat[i:i + 1]
        content_f = content_f[0:1]
    else:
        feat = adaptive_instance_normalization(content_f, style_f)
    feat = feat * alpha + content_f * (1 - alpha)
    return decoder(feat)


@functools.lru_cache(maxsize=2)
def torch_networks(vgg_path, decoder_path):
    vgg, decoder = make_vgg(), make_decoder()
    decoder.eval()
    vgg.eval()
    decoder.load_state_dict(torch.load(decoder_path))
    vgg.load_state_dict(torch.load(vgg_path))
    vgg = nn.Sequential(*list(vgg.children())[:31])
    return vgg, decoder


def run_test_py(files, content_path, style_paths, content_size=512, style_size=512, crop=False,
            alpha=1.0, weights=None, preserve_color=False):
    """What test.py writes for one content image, as a (H, W, 3) uint8 array."""
    vgg, decoder = torch_networks(files["vgg_zip"], files["decoder_legacy"])
    content_tf, style_tf = transform_of_test_py(content_size, crop), transform_of_test_py(style_size, crop)
    with torch.no_grad():
        if weights is not None:
            interpolation_weights = [w / sum(weights) for w in weights]
            style = torch.stack([style_tf(Image.open(str(p))) for p in style_paths])
            content = content_tf(Image.open(str(content_path))).unsqueeze(0).expand_as(style)
            output = torch_style_transfer(vgg, decoder, content, style, alpha, interpolation_weights)
        else:
            content = content_tf(Image.open(str(content_path)))
            style = style_tf(Image.open(str(style_paths[0])))
            if preserve_color:
                style = torch_coral(style, content)
            output = torch_style_transfer(vgg, decoder, content.unsqueeze(0), style.unsqueeze(0), alpha)
    return tv_save_image_array(output).astype(np.int16)


def assert_pixels_match(ours, reference, min_inside=0.7):
    """Within 1 of 255 everywhere (float32 sums in another order can move a value across
    a rounding boundary), and not a trivially saturated picture."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    assert np.abs(ours - reference).max() <= 1
    # A flat or clamped picture would hide a wrong result: ask for most pixels strictly
    # inside (0, 255) and a spatial spread of >= 15 levels in every channel.
    inside = ((reference > 0) & (reference < 255)).mean()
    spread = reference.reshape(-1, 3).std(axis=0).min()
    assert inside > min_inside and spread > 15, f"blind comparison: {inside:.2f} inside, spread {spread:.1f}"


# ---------------------------------------------------------------- matching test.py

@pytest.mark.parametrize("alpha, crop", [(1.0, False), (0.6, True)])
def test_matches_test_py_pixel_for_pixel(files, tmp_path, alpha, crop):
    # 44 is no multiple of 8: the output comes back at 8*ceil(h/8), as test.py's does.
    run_main(files, tmp_path, "--content", files["content"], "--style", files["style"],
             "--content_size", 44, "--style_size", 36, "--alpha", alpha, "--save_ext", ".png",
             *(["--crop"] if crop else []))
    ours = read(tmp_path / "photo_stylized_paint.png")
    reference = run_test_py(files, files["content"], [files["style"]], 44, 36, crop, alpha)
    assert ours.shape == ((48, 48, 3) if crop else (64, 48, 3))  # 44x61 content -> 48x64
    assert_pixels_match(ours, reference)


def test_both_weight_formats_give_the_same_picture(files, tmp_path):
    for pair in ("A", "B"):
        run_main(files, tmp_path / pair, "--content", files["content"], "--style", files["style"],
                 "--content_size", 24, "--style_size", 24, "--save_ext", ".png", pair=pair)
    np.testing.assert_array_equal(read(tmp_path / "A" / "photo_stylized_paint.png"),
                                  read(tmp_path / "B" / "photo_stylized_paint.png"))


def test_preserve_color_matches_test_py(files, tmp_path):
    run_main(files, tmp_path, "--content", files["content"], "--style", files["style"],
             "--content_size", 40, "--style_size", 32, "--preserve_color", "--save_ext", ".png")
    ours = read(tmp_path / "photo_stylized_paint.png")
    # The decoder was calibrated on the plain result; this one clamps more (~50% inside).
    assert_pixels_match(ours, run_test_py(files, files["content"], [files["style"]], 40, 32,
                                          preserve_color=True), min_inside=0.4)
    # and it is not the plain result
    run_main(files, tmp_path / "plain", "--content", files["content"], "--style", files["style"],
             "--content_size", 40, "--style_size", 32, "--save_ext", ".png")
    assert np.abs(read(tmp_path / "plain" / "photo_stylized_paint.png") - ours).max() > 10


def test_interpolation_matches_test_py(files, tmp_path):
    # test.py stacks the styles and expands the content to their shape: all three
    # must have one size, which --crop and equal sizes give.
    run_main(files, tmp_path, "--content", files["content"],
             "--style", f"{files['style']},{files['style2']}", "--style_interpolation_weights", "1,3",
             "--content_size", 40, "--style_size", 40, "--crop", "--alpha", 0.8, "--save_ext", ".png")
    ours = read(tmp_path / "photo_interpolation.png")
    reference = run_test_py(files, files["content"], [files["style"], files["style2"]], 40, 40,
                        crop=True, alpha=0.8, weights=[1, 3])
    assert_pixels_match(ours, reference)


def test_interpolation_decimal_and_default_weights(files, tmp_path):
    common = ["--content", files["content"], "--style", f"{files['style']},{files['style2']}",
              "--content_size", 24, "--style_size", 24, "--save_ext", ".png"]
    outputs = {}
    for name, weights in (("int", "1,3"), ("dec", "0.5,1.5"), ("equal", "1,1"), ("default", None)):
        extra = [] if weights is None else ["--style_interpolation_weights", weights]
        run_main(files, tmp_path / name, *common, *extra)
        outputs[name] = read(tmp_path / name / "photo_interpolation.png")
    # 0.5/2 == 1/4 and 1.5/2 == 3/4 exactly in binary: the same computation
    np.testing.assert_array_equal(outputs["int"], outputs["dec"])
    np.testing.assert_array_equal(outputs["equal"], outputs["default"])
    # the weights do matter (random weights stylize mildly: a few levels, above the +-1 noise)
    assert np.abs(outputs["int"] - outputs["equal"]).max() >= 2


def test_interpolation_of_styles_of_different_sizes(files, tmp_path):
    """test.py cannot stack these; each style is encoded on its own instead."""
    run_main(files, tmp_path, "--content", files["content"],
             "--style", f"{files['style']},{files['style3']}", "--style_interpolation_weights", "2,1",
             "--content_size", 32, "--style_size", 24, "--save_ext", ".png")
    vgg, decoder = torch_networks(files["vgg_zip"], files["decoder_legacy"])
    tf = transform_of_test_py(32, False), transform_of_test_py(24, False)
    with torch.no_grad():
        content_f = vgg(tf[0](Image.open(files["content"])).unsqueeze(0))
        feat = 0
        for w, path in zip((2 / 3, 1 / 3), (files["style"], files["style3"])):
            style_f = vgg(tf[1](Image.open(path)).unsqueeze(0))
            feat = feat + w * adaptive_instance_normalization(content_f, style_f)
        reference = tv_save_image_array(decoder(feat)).astype(np.int16)
    assert_pixels_match(read(tmp_path / "photo_interpolation.png"), reference)


def test_size_zero_keeps_the_size_and_crop_takes_the_shorter_side(files, tmp_path):
    run_main(files, tmp_path, "--content", files["content"], "--style", files["style"],
             "--content_size", 0, "--style_size", 0, "--save_ext", ".png")
    ours = read(tmp_path / "photo_stylized_paint.png")
    assert ours.shape == (72, 56, 3)  # 50x70 -> 8*ceil(70/8) x 8*ceil(50/8)
    assert_pixels_match(ours, run_test_py(files, files["content"], [files["style"]], 0, 0))
    run_main(files, tmp_path / "crop", "--content", files["content"], "--style", files["style"],
             "--content_size", 0, "--style_size", 0, "--crop", "--save_ext", ".png")
    assert read(tmp_path / "crop" / "photo_stylized_paint.png").shape == (56, 56, 3)  # 50x50


# ---------------------------------------------------------------- folders, names, progress

def test_folders_names_and_progress(files, tmp_path, capsys):
    contents, styles = tmp_path / "contents", tmp_path / "styles"
    contents.mkdir()
    styles.mkdir()
    for key in ("content", "content2"):
        shutil.copy(files[key], contents)
    shutil.copy(files["style"], styles / "paint.png")
    (contents / "notes.txt").write_text("not an image")
    (contents / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (styles / "tiny.png").write_bytes(b"")  # empty file: unreadable
    Image.new("RGB", (8, 30)).save(styles / "thin.png")  # too small at --style_size 0
    out = tmp_path / "out"
    assert run_main(files, out, "--content_dir", contents, "--style_dir", styles,
                    "--content_size", 16, "--style_size", 0) == 0
    assert sorted(os.listdir(out)) == ["photo_stylized_paint.jpg", "street_stylized_paint.jpg"]
    assert Image.open(out / "photo_stylized_paint.jpg").format == "JPEG"  # default --save_ext
    captured = capsys.readouterr()
    warnings = captured.err.splitlines()
    assert all(line.startswith("warning: ") for line in warnings), captured.err
    joined = "\n".join(warnings)
    for name in ("notes.txt", "broken.jpg", "tiny.png", "thin.png"):
        assert name in joined
    assert f"at least {MIN_SIDE}x{MIN_SIDE}" in joined
    progress = [line for line in captured.out.splitlines() if line.startswith("[")]
    # 3 contents x 3 styles; only photo and street with paint can be stylized
    assert [line.split(" ->")[0] for line in progress] == ["[4/9] photo.png + paint.png",
                                                           "[7/9] street.png + paint.png"]
    assert "wrote 2 images to " in captured.out and "7 skipped" in captured.out


def test_output_names_and_summary(files, tmp_path, capsys):
    two = f"{files['style']},{files['style2']}"
    run_main(files, tmp_path, "--content", files["content"], "--style", files["style"],
             "--content_size", 16, "--style_size", 16, "--save_ext", "png")  # the dot is added
    run_main(files, tmp_path, "--content", files["content"], "--style", two,
             "--content_size", 16, "--style_size", 16)
    mask = tmp_path / "mask.png"
    Image.new("L", (10, 10), 255).save(mask)
    run_main(files, tmp_path, "--content", files["content"], "--style", two, "--mask", mask,
             "--content_size", 16, "--style_size", 16)
    assert sorted(p for p in os.listdir(tmp_path) if p != "mask.png") == [
        "photo_interpolation.jpg", "photo_mask_paint_ink.jpg", "photo_stylized_paint.png"]
    out = capsys.readouterr().out
    assert out.count("[1/1] photo.png + ") == 3 and out.count("wrote 1 image to ") == 3
    assert " s\n" in out


def test_embedded_default_with_random_weights(tmp_path, capsys):
    assert main(["--random_weights", "--content_size", "16", "--style_size", "16",
                 "--output", str(tmp_path)]) == 0
    written = os.listdir(tmp_path)
    assert len(written) == 1 and "_stylized_" in written[0] and written[0].endswith(".jpg")
    out = capsys.readouterr().out
    assert "bundled samples" in out and "random" in out


# ---------------------------------------------------------------- the mask

def torch_masked_reference(files, content_path, styles, mask_bool, size, alpha):
    """Lua AdaIN's spatial control written from its definition, float64 statistics."""
    vgg, decoder = torch_networks(files["vgg_zip"], files["decoder_legacy"])
    tf = transform_of_test_py(size, False)
    with torch.no_grad():
        content_f = vgg(tf(Image.open(content_path)).unsqueeze(0)).double()[0]  # (C, h, w)
        target = torch.zeros_like(content_f)
        for region, style_path in ((mask_bool, styles[0]), (~mask_bool, styles[1])):
            region = torch.from_numpy(region)
            style_mean, style_std = calc_mean_std(vgg(tf(Image.open(style_path)).unsqueeze(0)).double())
            values = content_f[:, region]                                      # (C, n)
            mean = values.mean(dim=1, keepdim=True)
            std = (values.var(dim=1, keepdim=True) + 1e-5).sqrt()              # unbiased
            target[:, region] = (values - mean) / std * style_std[0, :, :, 0] + style_mean[0, :, :, 0]
        feat = alpha * target + (1 - alpha) * content_f
        return tv_save_image_array(decoder(feat.float()[None])).astype(np.int16)


def test_mask_matches_the_definition(files, tmp_path):
    # content 40 -> 40x56, relu4_1 5x7; a mask of that very size maps pixel to position.
    mask_bool = np.zeros((7, 5), dtype=bool)
    mask_bool[:, :2] = True
    mask_bool[5:, :] = True
    mask_path = tmp_path / "mask.png"
    Image.fromarray(np.where(mask_bool, 255, 0).astype(np.uint8)).save(mask_path)
    run_main(files, tmp_path, "--content", files["content"], "--style",
             f"{files['style']},{files['style2']}", "--mask", mask_path, "--alpha", 0.9,
             "--content_size", 40, "--style_size", 40, "--save_ext", ".png")
    ours = read(tmp_path / "photo_mask_paint_ink.png")
    reference = torch_masked_reference(files, files["content"], [files["style"], files["style2"]],
                                       mask_bool, 40, 0.9)
    assert_pixels_match(ours, reference)


def test_degenerate_masks(files, tmp_path):
    common = ["--content", files["content"], "--content_size", 32, "--style_size", 32,
              "--save_ext", ".png"]
    white = tmp_path / "white.png"
    Image.new("1", (7, 9), 1).save(white)  # a 1-bit mask, another size: resized anyway
    run_main(files, tmp_path / "white", *common, "--style", f"{files['style']},{files['style2']}",
             "--mask", white)
    run_main(files, tmp_path / "other_bg", *common, "--style", f"{files['style']},{files['style3']}",
             "--mask", white)
    run_main(files, tmp_path / "plain", *common, "--style", files["style"])
    masked = read(tmp_path / "white" / "photo_mask_paint_ink.png")
    # all foreground: plain AdaIN with the first style (sums in another order: +-1)
    assert np.abs(masked - read(tmp_path / "plain" / "photo_stylized_paint.png")).max() <= 1
    # the background style is not used at all
    np.testing.assert_array_equal(masked, read(tmp_path / "other_bg" / "photo_mask_paint_wide.png"))


# ---------------------------------------------------------------- devices

def test_backend_for_flag():
    backend, text = backend_for_flag("cpu")
    assert backend.name == "numpy" and text == "numpy"
    try:
        from adain_np.cuda.gpu import gpu_available
        has_gpu = gpu_available()[0]
    except ImportError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present: auto picks it, which the GPU tests cover")
    backend, text = backend_for_flag("auto")
    assert backend.name == "numpy" and text.startswith("numpy (auto:")
    with pytest.raises(UserError, match="--device gpu"):
        backend_for_flag("gpu")


# ---------------------------------------------------------------- bad input, as the user sees it

def run_command(args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "adain_np.stylize", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def bad_cases(files, tmp):
    """(name, args, words the message must contain)."""
    small = tmp / "small.png"
    Image.new("RGB", (MIN_SIDE - 1, 40)).save(small)
    corrupt = tmp / "corrupt.png"
    corrupt.write_bytes(open(files["content"], "rb").read()[:200])
    empty_dir, text_dir = tmp / "empty", tmp / "text_only"
    empty_dir.mkdir()
    text_dir.mkdir()
    (text_dir / "readme.txt").write_text("hello")
    style_dir = tmp / "one_style"
    style_dir.mkdir()
    shutil.copy(files["style"], style_dir)
    not_image = tmp / "mask.png"
    not_image.write_text("not an image")
    bad_pth = tmp / "bad.pth"
    bad_pth.write_bytes(b"garbage" * 10)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    c, s, s2, s3 = files["content"], files["style"], files["style2"], files["style3"]
    two = f"{s},{s2}"
    return [
        ("missing content", ["--content", tmp / "nope.jpg", "--style", s], ["nope.jpg", "no such file"]),
        ("missing style", ["--content", c, "--style", f"{s},{tmp / 'gone.png'}"], ["gone.png", "no such file"]),
        ("missing content folder", ["--content_dir", tmp / "nodir", "--style", s], ["nodir", "no such folder"]),
        ("content folder is a file", ["--content_dir", c, "--style", s], ["not a folder"]),
        ("empty folder", ["--content_dir", empty_dir, "--style", s], ["no image files"]),
        ("folder without images", ["--content", c, "--style_dir", text_dir], ["no image files"]),
        ("corrupt image", ["--content", corrupt, "--style", s], ["corrupt.png", "cannot read"]),
        ("not an image", ["--content", c, "--style", not_image], ["mask.png", "not an image"]),
        ("too small image", ["--content", small, "--style", s, "--content_size", 0],
         ["small.png", f"at least {MIN_SIDE}x{MIN_SIDE}"]),
        ("too small size", ["--content", c, "--style", s, "--style_size", MIN_SIDE - 1],
         ["--style_size", f"at least {MIN_SIDE}x{MIN_SIDE}"]),
        ("negative size", ["--content", c, "--style", s, "--content_size", -1], ["--content_size"]),
        ("alpha above 1", ["--content", c, "--style", s, "--alpha", 1.5], ["--alpha", "between 0 and 1"]),
        ("alpha below 0", ["--content", c, "--style", s, "--alpha", -0.1], ["--alpha"]),
        ("alpha nan", ["--content", c, "--style", s, "--alpha", "nan"], ["--alpha"]),
        ("weights count", ["--content", c, "--style", two, "--style_interpolation_weights", "1,2,3"],
         ["3 weights for 2 styles"]),
        ("weights for one style", ["--content", c, "--style", s, "--style_interpolation_weights", "1,2"],
         ["2 weights for 1 style;"]),
        ("weights sum 0", ["--content", c, "--style", two, "--style_interpolation_weights", "1,-1"],
         ["sum to 0"]),
        ("weights not numbers", ["--content", c, "--style", two, "--style_interpolation_weights", "1,x"],
         ["not a comma-separated list of numbers"]),
        ("mask one style", ["--content", c, "--style", s, "--mask", files["style"]], ["exactly two styles"]),
        ("mask three styles", ["--content", c, "--style", f"{two},{s3}", "--mask", files["style"]],
         ["exactly two styles"]),
        ("mask style folder", ["--content", c, "--style_dir", style_dir, "--mask", files["style"]],
         ["exactly two styles"]),
        ("mask not an image", ["--content", c, "--style", two, "--mask", not_image], ["--mask", "not an image"]),
        ("mask missing", ["--content", c, "--style", two, "--mask", tmp / "nomask.png"], ["no such file"]),
        ("missing vgg", ["--content", c, "--style", s, "--vgg", tmp / "models" / "v.pth"],
         ["v.pth", DOWNLOAD_HINT]),
        ("missing decoder", ["--content", c, "--style", s, "--decoder", tmp / "d.pth"], ["d.pth", DOWNLOAD_HINT]),
        ("broken weights", ["--content", c, "--style", s, "--decoder", bad_pth], ["bad.pth"]),
        ("vgg given as decoder", ["--content", c, "--style", s, "--decoder", files["vgg_zip"]],
         ["decoder weights", "key"]),
        ("output is a file", ["--content", c, "--style", s, "--output", a_file], ["--output", "not a folder"]),
        ("output under a file", ["--content", c, "--style", s, "--output", a_file / "sub"],
         ["--output", "cannot create"]),
        ("bad extension", ["--content", c, "--style", s, "--save_ext", ".xyz"], ["--save_ext"]),
        ("unknown flag", ["--content", c, "--style", s, "--colour"], ["--colour"]),
        ("bad device", ["--content", c, "--style", s, "--device", "tpu"], ["--device"]),
        ("only content", ["--content", c], ["--style"]),
    ]


# These also run in a fresh interpreter; the others run in-process through cli.run_cli,
# the wrapper `python -m adain_np.stylize` uses, to save ~0.3 s of start-up each.
SUBPROCESS_CASES = {"missing content", "empty folder", "corrupt image", "too small image",
                    "alpha above 1", "weights count", "mask not an image", "missing vgg",
                    "output under a file", "unknown flag"}


def run_in_process(args, capsys):
    code = cli.run_cli(main, [str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_bad_input_is_one_line_exit_2_and_nothing_written(files, tmp_path, capsys):
    """All the cases in one test so the temporary files are made once; a failure names its case."""
    cases = bad_cases(files, tmp_path)
    assert SUBPROCESS_CASES <= {name for name, _, _ in cases}
    for name, args, words in cases:
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        if "--output" not in args:
            args = [*args, "--output", out]
        if "--vgg" not in args:
            args = ["--vgg", files["vgg_zip"], *args]
        if "--decoder" not in args:
            args = ["--decoder", files["decoder_zip"], *args]
        runs = [run_in_process(args, capsys)]
        if name in SUBPROCESS_CASES:
            runs.append(run_command(args))
        for result in runs:
            try:
                line = assert_one_line_error(result)
                for word in words:
                    assert word in line, word
                assert not out.exists() or not os.listdir(out)
            except AssertionError as err:
                raise AssertionError(f"case {name!r}: {err}\nstderr: {result.stderr}") from None


def test_default_run_without_weights_says_how_to_get_them(tmp_path):
    result = run_command([], cwd=tmp_path)
    line = assert_one_line_error(result)  # the note about the samples goes to stdout
    assert "models/vgg_normalised.pth" in line and DOWNLOAD_HINT in line
    assert not (tmp_path / "output").exists()


def test_two_inputs_with_one_output_name_are_refused(files, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(files["content"]).save(folder / "a.png")
    Image.open(files["content"]).save(folder / "a.bmp")
    result = run_command(["--vgg", files["vgg_zip"], "--decoder", files["decoder_zip"],
                      "--content_dir", folder, "--style", files["style"], "--output", tmp_path / "o"])
    assert "would both be written" in assert_one_line_error(result)
    assert not (tmp_path / "o").exists()


def test_a_device_that_is_not_there_is_one_line(files, tmp_path):
    try:
        from adain_np.cuda.gpu import gpu_available
        if gpu_available()[0]:
            pytest.skip("a GPU is present")
    except ImportError:
        pass
    result = run_command(["--random_weights", "--device", "gpu", "--content_size", 16,
                      "--style_size", 16, "--output", tmp_path / "o"])
    assert "--device gpu" in assert_one_line_error(result)


def test_emulator_device_gives_the_numpy_picture(files, tmp_path):
    """The kernel backend (on the CPU emulator) through the whole command, mask included."""
    mask = tmp_path / "mask.png"
    Image.fromarray(np.tile(np.array([0, 255], dtype=np.uint8), (16, 8))).save(mask)  # stripes
    pictures = []
    for device in ("cpu", "emulator"):
        run_main(files, tmp_path / device, "--device", device, "--content", files["content"],
                 "--style", f"{files['style']},{files['style2']}", "--mask", mask,
                 "--content_size", 16, "--style_size", 16, "--save_ext", ".png")
        pictures.append(read(tmp_path / device / "photo_mask_paint_ink.png"))
    # Other summation orders (and no fused multiply-adds) in the kernels: +-1 after rounding.
    assert np.abs(pictures[0] - pictures[1]).max() <= 1
