"""coral.py against a torch transcription of function.py's coral; masked.py against an
independent float64 reference of the Lua AdaIN's spatial control."""
import numpy as np
import pytest
import torch
from PIL import Image

from adain_np.coral import _calc_feat_flatten_mean_std, _mat_sqrt, coral
from adain_np.images import ImageError
from adain_np.masked import load_mask, mask_to_features, masked_adain
from adain_np.stats import adain_with_stats_forward


# ---------------------------------------------------------------- function.py, in torch

def torch_calc_feat_flatten_mean_std(feat):
    feat_flatten = feat.view(3, -1)
    mean = feat_flatten.mean(dim=-1, keepdim=True)
    std = feat_flatten.std(dim=-1, keepdim=True)
    return feat_flatten, mean, std


def torch_mat_sqrt(x):
    U, D, V = torch.svd(x)
    return torch.mm(torch.mm(U, D.pow(0.5).diag()), V.t())


def torch_coral(source, target):
    source_f, source_f_mean, source_f_std = torch_calc_feat_flatten_mean_std(source)
    source_f_norm = (source_f - source_f_mean.expand_as(source_f)) / source_f_std.expand_as(source_f)
    source_f_cov_eye = torch.mm(source_f_norm, source_f_norm.t()) + torch.eye(3, dtype=source.dtype)
    target_f, target_f_mean, target_f_std = torch_calc_feat_flatten_mean_std(target)
    target_f_norm = (target_f - target_f_mean.expand_as(target_f)) / target_f_std.expand_as(target_f)
    target_f_cov_eye = torch.mm(target_f_norm, target_f_norm.t()) + torch.eye(3, dtype=source.dtype)
    source_f_norm_transfer = torch.mm(torch_mat_sqrt(target_f_cov_eye),
                                      torch.mm(torch.inverse(torch_mat_sqrt(source_f_cov_eye)),
                                               source_f_norm))
    source_f_transfer = (source_f_norm_transfer * target_f_std.expand_as(source_f_norm)
                         + target_f_mean.expand_as(source_f_norm))
    return source_f_transfer.view(source.size())


def colourful(rng, h, w):
    """(3, h, w) in [0, 1] with correlated channels, like a photo's."""
    base = rng.random((1, h, w))
    mix = rng.random((3, 1, 1))
    return np.clip(0.6 * mix * base + 0.4 * rng.random((3, h, w)), 0, 1).astype(np.float32)


def test_coral_matches_function_py_in_float64():
    rng = np.random.default_rng(0)
    style, content = colourful(rng, 12, 17), colourful(rng, 9, 11)
    ours = coral(style, content)
    ref = torch_coral(torch.tensor(style, dtype=torch.float64),
                      torch.tensor(content, dtype=torch.float64)).numpy()
    assert ours.shape == style.shape and ours.dtype == np.float32
    # Ours runs in float64 and rounds to float32 at the end: 2^-24 relative, ~1e-7 here.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_coral_matches_function_py_in_float32_as_test_py_runs_it():
    rng = np.random.default_rng(1)
    style, content = colourful(rng, 32, 24), colourful(rng, 20, 28)
    ref = torch_coral(torch.tensor(style), torch.tensor(content)).numpy()
    # torch does the sums, SVD and inverse in float32: a few 1e-6 of error on values ~1.
    np.testing.assert_allclose(coral(style, content), ref, rtol=0, atol=2e-5)


def test_coral_gives_the_target_channel_means():
    rng = np.random.default_rng(2)
    style, content = colourful(rng, 15, 15), colourful(rng, 10, 30)
    out = coral(style, content).astype(np.float64)
    # The standardised source has zero mean and the 3x3 transfer keeps it zero.
    np.testing.assert_allclose(out.reshape(3, -1).mean(1), content.reshape(3, -1).mean(1), atol=1e-6)


def test_helpers_match_torch():
    rng = np.random.default_rng(3)
    feat = colourful(rng, 5, 7).astype(np.float64)
    flat, mean, std = _calc_feat_flatten_mean_std(feat)
    t_flat, t_mean, t_std = torch_calc_feat_flatten_mean_std(torch.tensor(feat))
    np.testing.assert_array_equal(flat, t_flat.numpy())
    np.testing.assert_allclose(mean, t_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, t_std.numpy(), rtol=1e-12)  # unbiased, as torch's std
    a = rng.standard_normal((3, 3))
    spd = a @ a.T + np.eye(3)
    root = _mat_sqrt(spd)
    np.testing.assert_allclose(root, torch_mat_sqrt(torch.tensor(spd)).numpy(), atol=1e-12)
    np.testing.assert_allclose(root @ root, spd, atol=1e-12)


def test_coral_grayscale_style_and_flat_channel_stay_finite():
    rng = np.random.default_rng(4)
    content = colourful(rng, 8, 8)
    gray = np.repeat(rng.random((1, 8, 8)), 3, axis=0).astype(np.float32)  # rank-1 covariance
    np.testing.assert_allclose(coral(gray, content),
                               torch_coral(torch.tensor(gray, dtype=torch.float64),
                                           torch.tensor(content, dtype=torch.float64)).numpy(),
                               atol=1e-5)  # float64 vs float64, float32 output rounding only
    flat = colourful(rng, 8, 8)
    flat[1] = 0.5  # zero spread: 0/0 in torch, whose SVD then fails on the NaNs
    out = coral(flat, content)
    assert np.isfinite(out).all()
    with pytest.raises(Exception):
        torch_coral(torch.tensor(flat), torch.tensor(content))


# ---------------------------------------------------------------- masked AdaIN

def reference_masked_adain(content, fg, bg, mask, alpha, eps=1e-5):
    """Float64, per channel and per region, written from the definition."""
    content = content.astype(np.float64)[0]                          # (C, h, w)
    out = np.empty_like(content)
    for region, (style_mean, style_std) in ((mask, fg), (~mask, bg)):
        if not region.any():
            continue
        for c in range(content.shape[0]):
            values = content[c][region]
            n = values.size
            mean = values.sum() / n
            var = ((values - mean) ** 2).sum() / (n - 1) if n > 1 else 0.0
            normalized = (values - mean) / np.sqrt(var + eps)
            out[c][region] = normalized * float(style_std[0, c, 0, 0]) + float(style_mean[0, c, 0, 0])
    return (alpha * out + (1 - alpha) * content)[None]


def random_stats(rng, C):
    mean = rng.standard_normal((1, C, 1, 1)).astype(np.float32)
    std = (0.5 + rng.random((1, C, 1, 1))).astype(np.float32)
    return mean, std


@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.0])
def test_masked_adain_matches_reference(alpha):
    rng = np.random.default_rng(5)
    C, h, w = 16, 6, 7
    content = (3 * rng.random((1, C, h, w))).astype(np.float32)
    fg, bg = random_stats(rng, C), random_stats(rng, C)
    mask = rng.random((h, w)) < 0.4
    assert 2 <= mask.sum() <= h * w - 2
    ours = masked_adain(content, [fg, bg], mask, alpha)
    ref = reference_masked_adain(content, fg, bg, mask, alpha)
    assert ours.shape == content.shape and ours.dtype == np.float32
    # float32 sums over <= 42 positions against float64: ~1e-6 relative on values ~1-5.
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # A region is really normalised on its own: the foreground's content mean moves
    # to the fg style's mean (alpha 1), channel by channel.
    if alpha == 1.0:
        np.testing.assert_allclose(ours[0][:, mask].mean(axis=1), fg[0][0, :, 0, 0], atol=1e-5)
        np.testing.assert_allclose(ours[0][:, ~mask].mean(axis=1), bg[0][0, :, 0, 0], atol=1e-5)


def test_all_white_mask_is_plain_adain_with_the_first_style_and_ignores_the_second():
    rng = np.random.default_rng(6)
    content = rng.random((1, 8, 5, 5)).astype(np.float32)
    fg, bg, other_bg = random_stats(rng, 8), random_stats(rng, 8), random_stats(rng, 8)
    everywhere = np.ones((5, 5), dtype=bool)
    ours = masked_adain(content, [fg, bg], everywhere, 0.7)
    plain, _ = adain_with_stats_forward(content, *fg, 0.7)
    # Same arithmetic, sums in another order: float32 rounding only.
    np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours, masked_adain(content, [fg, other_bg], everywhere, 0.7))
    nowhere = np.zeros((5, 5), dtype=bool)
    np.testing.assert_allclose(masked_adain(content, [fg, bg], nowhere, 1.0),
                               adain_with_stats_forward(content, *bg, 1.0)[0], rtol=1e-5, atol=1e-6)


def test_single_position_region_takes_the_style_mean():
    rng = np.random.default_rng(7)
    content = rng.random((1, 4, 3, 3)).astype(np.float32)
    fg, bg = random_stats(rng, 4), random_stats(rng, 4)
    mask = np.zeros((3, 3), dtype=bool)
    mask[1, 2] = True
    out = masked_adain(content, [fg, bg], mask, 1.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, :, 1, 2], fg[0][0, :, 0, 0], atol=1e-6)


def test_masked_adain_refuses_a_mismatched_mask():
    content = np.zeros((1, 4, 3, 3), dtype=np.float32)
    stats = random_stats(np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match="mask shape"):
        masked_adain(content, [stats, stats], np.ones((4, 3), dtype=bool))


# ---------------------------------------------------------------- the mask file

def test_mask_is_shrunk_by_nearest_neighbour_to_the_feature_map():
    pixels = np.zeros((20, 30), dtype=np.uint8)  # (H, W)
    pixels[:, 11:] = 200
    pixels[3, 0] = 1  # non-zero counts as foreground
    mask = mask_to_features(Image.fromarray(pixels), (4, 8))
    # nearest neighbour samples pixel centres: source index floor((i + 0.5) * in / out)
    rows = np.floor((np.arange(4) + 0.5) * 20 / 4).astype(int)
    cols = np.floor((np.arange(8) + 0.5) * 30 / 8).astype(int)
    np.testing.assert_array_equal(mask, pixels[np.ix_(rows, cols)] > 0)
    assert mask.dtype == bool and mask.shape == (4, 8)


def test_mask_crop_keeps_the_centre_square():
    pixels = np.zeros((10, 30), dtype=np.uint8)
    pixels[:, 10:20] = 255  # exactly the centre 10x10 square is white
    assert mask_to_features(Image.fromarray(pixels), (2, 2), crop=True).all()
    assert not mask_to_features(Image.fromarray(pixels), (2, 6), crop=False).all()


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"])
def test_mask_loads_from_any_mode(tmp_path, mode):
    gray = np.zeros((16, 16), dtype=np.uint8)
    gray[:, 8:] = 255
    img = Image.fromarray(gray)
    if mode == "I;16":
        img = Image.fromarray((gray.astype(np.uint16) * 257))
        assert img.mode == "I;16"
    else:
        img = img.convert(mode)
    path = tmp_path / "mask.png"
    img.save(path)
    loaded = load_mask(path)
    assert loaded.mode == "L"
    expected = np.zeros((2, 2), dtype=bool)
    expected[:, 1] = True
    np.testing.assert_array_equal(mask_to_features(loaded, (2, 2)), expected)


def test_a_mask_that_is_not_an_image_is_an_image_error(tmp_path):
    path = tmp_path / "mask.png"
    path.write_text("not a picture")
    with pytest.raises(ImageError, match="mask.png"):
        load_mask(path)
