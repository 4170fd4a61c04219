"""Lesson 10: the paper's four user controls, alpha, style interpolation, colour preservation and masks.

Run:  python lessons/10_paper_controls.py [--quick] [--out FOLDER] [--vgg PTH --decoder PTH]

Section 7 of the paper shows that, because AdaIN only swaps statistics, the
user can steer it at test time without retraining:
  - alpha: t = alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c), from content to style;
  - style interpolation: t = sum_i w_i AdaIN(f(c), f(s_i)), a mix of styles;
  - colour preservation: recolour the style to the content's colours first
    (CORAL: match mean and covariance of the RGB values), so only texture moves;
  - spatial control: different styles on different regions of the content, each
    region normalised with its own statistics.
All four act on the features t that go into the decoder; adain_np.stylize implements
them (``python -m adain_np.stylize --alpha / --style a,b --style_interpolation_weights /
--preserve_color / --mask``), and this lesson calls its functions.

Two grids. First the controls with the network taken out: the RGB values play the
features (as in lesson 04), so each control's effect on colour statistics is visible.
Then the same controls through the real encoder and decoder. Without the published
weights (this machine cannot download them) those are seeded random weights, and the
second grid shows only that the machinery runs: a random decoder paints no style.
Get the weights with ``python -m adain_np.weights download`` and pass
``--vgg models/vgg_normalised.pth --decoder models/decoder.pth`` to see the paper's effect.

Prints: what each control does to the statistics. Draws: 10_controls_pixels.png,
10_controls_network.png. Check: CORAL and the interpolated, blended network output against
torch transcriptions of pytorch-AdaIN's function.py and test.py (or NumPy properties).
"""
import os
import sys

from _common import Lesson, heading, import_torch, max_abs, plt, rel_error, run

import numpy as np
from PIL import Image, ImageDraw

import adain_np
from adain_np.cli import UserError
from adain_np.coral import coral
from adain_np.images import sample_path
from adain_np.masked import mask_to_features, masked_adain
from adain_np.stats import adain_forward, calc_mean_std
from adain_np.net import adain_target
from adain_np.stylize import encode_style, prepare

ALPHAS = (0.0, 0.33, 0.67, 1.0)
INTERPOLATION = ((1.0, 0.0), (0.67, 0.33), (0.33, 0.67), (0.0, 1.0))


def add_args(parser):
    parser.add_argument("--vgg", help="published encoder weights (.pth/.npz); default: random, seeded")
    parser.add_argument("--decoder", help="published decoder weights (.pth/.npz); default: random, seeded")


def load_network(args):
    """(vgg, decoder, description): the given files, or the seeded random stand-ins."""
    if (args.vgg is None) != (args.decoder is None):
        raise UserError("give both --vgg and --decoder, or neither for random weights")
    if args.vgg is None:
        return adain_np.init_vgg_params(0), adain_np.init_decoder_params(0), "random seeded weights"
    from adain_np.files import BadFileError
    from adain_np.param_files import load_params
    try:
        return (load_params(args.vgg, "vgg"), load_params(args.decoder, "decoder"),
                f"weights {os.path.basename(args.vgg)}, {os.path.basename(args.decoder)}")
    except (OSError, BadFileError) as err:
        raise UserError(str(err)) from None


def circle_mask(height, width):
    """A grayscale PIL mask: white (foreground) ellipse in the middle, black around it."""
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).ellipse((width * 0.2, height * 0.1, width * 0.8, height * 0.9), fill=255)
    return img


def main():
    lesson = Lesson(__doc__, extra_args=add_args)
    size = 32 if lesson.quick else 128
    content = prepare(sample_path("chelsea"), size, crop=True)       # (3, size, size)
    style_a = prepare(sample_path("stained_glass"), size, crop=True)
    style_b = prepare(sample_path("swirls"), size, crop=True)
    mask_img = circle_mask(size, size)

    # %% ------------------------------------------------------------------------------
    # 1. The controls on pixels. Every formula below is the one used on relu4_1 features,
    # with the three colour channels standing in for the 512 feature channels.
    heading("1. the controls on RGB values (no network)")
    c = content[None]                                                # (1, 3, size, size)
    pixel_rows = {}
    pixel_rows["alpha"] = [(f"style b, alpha {a}", adain_forward(c, style_b[None], a)[0][0])
                           for a in ALPHAS]
    # Interpolation: a weighted sum of AdaIN outputs. Every AdaIN(c, s_i) is the SAME
    # normalised content n = (c - mean_c) / std_c, scaled and shifted per channel:
    #     sum_i w_i AdaIN(c, s_i) = (sum_i w_i std_i) * n + sum_i w_i mean_i,
    # so the mix has the weighted mean AND the weighted std of the styles (up to eps: n's
    # own std is sqrt(var_c / (var_c + eps)), a hair below 1). The check below measures it.
    mixes = []
    worst_mix_std = 0.0
    for w_a, w_b in INTERPOLATION:
        mixed = w_a * adain_forward(c, style_a[None])[0] + w_b * adain_forward(c, style_b[None])[0]
        mixes.append((f"a {w_a} + b {w_b}", mixed[0]))
        weighted_std = w_a * calc_mean_std(style_a[None])[1] + w_b * calc_mean_std(style_b[None])[1]
        worst_mix_std = max(worst_mix_std, rel_error(calc_mean_std(mixed)[1], weighted_std))
    print(f"interpolated pixels: std of the mix vs the weighted std of the styles, worst relative "
          f"difference {worst_mix_std:.1e}")
    pixel_rows["interpolation"] = mixes
    # Colour preservation: coral(style, content) gives the style the content's colour mean
    # and covariance. In pixel space AdaIN with that recoloured style hands back roughly
    # the content itself: its colour statistics ARE the content's. Through the network the
    # recoloured style still carries its texture, and only that moves.
    style_a_kept = coral(style_a, content)                           # (3, size, size)
    style_b_kept = coral(style_b, content)
    pixel_rows["preserve colour"] = [
        ("style a recoloured", style_a_kept), ("AdaIN with it", adain_forward(c, style_a_kept[None])[0][0]),
        ("style b recoloured", style_b_kept), ("AdaIN with it", adain_forward(c, style_b_kept[None])[0][0])]
    # Masks: the ellipse takes style a, the rest style b, each region normalised alone.
    pixel_mask = mask_to_features(mask_img, (size, size))            # (size, size) bool
    stats = [calc_mean_std(s[None]) for s in (style_a, style_b)]
    masked = masked_adain(c, stats, pixel_mask)[0]
    swapped = masked_adain(c, stats[::-1], pixel_mask)[0]
    pixel_rows["mask"] = [("mask", np.repeat(pixel_mask[None].astype(np.float32), 3, axis=0)),
                          ("a inside, b outside", masked), ("b inside, a outside", swapped)]
    m_alpha = [calc_mean_std(img[None])[0].ravel() for _, img in pixel_rows["alpha"]]
    print("RGB means along alpha (style b):", " -> ".join(str(np.round(m, 2)) for m in m_alpha))
    print(f"content RGB means {np.round(content.mean(axis=(1, 2)), 3)}, style a recoloured by CORAL "
          f"{np.round(style_a_kept.mean(axis=(1, 2)), 3)} (was {np.round(style_a.mean(axis=(1, 2)), 3)})")
    inside = masked[:, pixel_mask]                                   # (3, n) the ellipse's pixels
    print(f"masked: RGB means inside the ellipse {np.round(inside.mean(axis=1), 3)} = style a's "
          f"{np.round(style_a.mean(axis=(1, 2)), 3)}")
    draw_grid(lesson, pixel_rows, content, style_a, style_b, "10_controls_pixels.png",
              "the four controls on RGB values: the statistics they move, without a network")

    # %% ------------------------------------------------------------------------------
    # 2. The same controls through the network (adain_np.stylize's functions). The styles
    # are encoded once and reused; only the decoder runs per picture.
    vgg, decoder, description = load_network(lesson.args)
    heading(f"2. the controls through encoder and decoder ({description})")
    net = adain_np.Net(vgg, decoder)
    content_feat = net.encode(content[None])                         # (1, 512, size/8, size/8)
    stats_a, stats_b = encode_style(net, style_a), encode_style(net, style_b)

    def decode(feat):
        return net.decode(feat)[0]                                   # (3, size, size)

    rows = {}
    rows["alpha"] = [(f"style b, alpha {a}", decode(adain_target(net.backend, content_feat, [stats_b], a)))
                     for a in ALPHAS]
    rows["interpolation"] = [
        (f"a {w_a} + b {w_b}", decode(adain_target(net.backend, content_feat, [stats_a, stats_b], 1.0,
                                                         weights=(w_a, w_b))))
        for w_a, w_b in INTERPOLATION]
    kept_a, kept_b = encode_style(net, style_a_kept), encode_style(net, style_b_kept)
    rows["preserve colour"] = [
        ("style a, colour not kept", decode(adain_target(net.backend, content_feat, [stats_a], 1.0))),
        ("style a, colour kept", decode(adain_target(net.backend, content_feat, [kept_a], 1.0))),
        ("style b, colour not kept", decode(adain_target(net.backend, content_feat, [stats_b], 1.0))),
        ("style b, colour kept", decode(adain_target(net.backend, content_feat, [kept_b], 1.0)))]
    feat_mask = mask_to_features(mask_img, content_feat.shape[2:])   # (size/8, size/8) bool
    rows["mask"] = [("mask at relu4_1", np.repeat(feat_mask[None].astype(np.float32), 3, axis=0)),
                    ("a inside, b outside", decode(adain_target(net.backend, content_feat, [stats_a, stats_b],
                                                                   1.0, mask=feat_mask))),
                    ("b inside, a outside", decode(adain_target(net.backend, content_feat, [stats_b, stats_a],
                                                                   1.0, mask=feat_mask)))]
    # A random decoder turns every t into much the same purple haze, so with random weights
    # the grid shows how far each output moved from g(f(c)) (alpha 0, no style) instead:
    # the controls do steer the output (more with alpha, in the ellipse for the mask),
    # though a random decoder cannot make that change look like a style. Note the colour-kept
    # cells: they barely move. A random VGG's relu4_1 statistics mostly encode colour, so
    # once the style has the content's colours there is little left for AdaIN to transfer;
    # a trained VGG's statistics also encode texture, and there only the texture moves.
    random_weights = lesson.args.vgg is None
    base = rows["alpha"][0][1]                                       # g(f(c)), alpha 0
    print(f"decoded {sum(len(r) for r in rows.values()) - 1} pictures of {size}x{size}")
    for name, cells in rows.items():
        moved = [f"{np.abs(img - base).mean():.3f}" for label, img in cells if not label.startswith("mask")]
        print(f"{name:>15}: mean |output - g(f(c))| = {', '.join(moved)}")
    draw_grid(lesson, rows, content, style_a, style_b, "10_controls_network.png",
              f"the four controls through the network ({description})" + (
                  "\nrandom decoder: each cell is |output - g(f(c))|, how far the control moved it"
                  if random_weights else ""),
              diff_base=base if random_weights else None)

    # %% ------------------------------------------------------------------------------
    # Checks.
    heading("checks")
    # The interpolated pixels' std is the weighted std of the styles. Not exactly: eps
    # enters twice (n's std is sqrt(var_c / (var_c + eps)), and the measured std adds eps
    # under its root), each a relative change of about eps / (2 var). The pictures' channel
    # variances are above 1e-3, so that is below ~1e-2 at worst; a wrong claim (the std of a
    # mix of two different styles' outputs) would be off by tens of percent.
    lesson.check("interpolation on pixels: max |std(mix) - sum w_i std(s_i)| / max std", worst_mix_std, 1e-2)
    # A mask that covers everything is plain AdaIN with the first style (same formula,
    # same positions: float32 rounding only).
    everywhere = np.ones(content_feat.shape[2:], dtype=bool)
    lesson.check("masked AdaIN with an all-foreground mask vs AdaIN: max rel difference",
                 rel_error(masked_adain(content_feat, [stats_a, stats_b], everywhere),
                           adain_target(net.backend, content_feat, [stats_a], 1.0)), 1e-5)
    torch = import_torch()
    if torch is not None:
        from torch_reference import TorchNet, adaptive_instance_normalization as torch_adain
        # pytorch-AdaIN's coral, transcribed (function.py). Ours runs in float64, torch's in
        # float32: ~1e-6 apart on values of ~1.
        def torch_coral(source, target):
            def flat_mean_std(feat):
                flat = feat.view(3, -1)
                return flat, flat.mean(dim=-1, keepdim=True), flat.std(dim=-1, keepdim=True)

            def mat_sqrt(x):
                u, d, v = torch.svd(x)
                return torch.mm(torch.mm(u, d.pow(0.5).diag()), v.t())
            s_flat, s_mean, s_std = flat_mean_std(source)
            s_norm = (s_flat - s_mean.expand_as(s_flat)) / s_std.expand_as(s_flat)
            s_cov_eye = torch.mm(s_norm, s_norm.t()) + torch.eye(3)
            t_flat, t_mean, t_std = flat_mean_std(target)
            t_norm = (t_flat - t_mean.expand_as(t_flat)) / t_std.expand_as(t_flat)
            t_cov_eye = torch.mm(t_norm, t_norm.t()) + torch.eye(3)
            transfer = torch.mm(mat_sqrt(t_cov_eye), torch.mm(torch.inverse(mat_sqrt(s_cov_eye)), s_norm))
            return (transfer * t_std.expand_as(s_norm) + t_mean.expand_as(s_norm)).view(source.size())
        ref = torch_coral(torch.from_numpy(style_a), torch.from_numpy(content)).numpy()
        lesson.check("coral: max |mine - torch function.py| / max |torch|", rel_error(style_a_kept, ref), 1e-5)
        # test.py's style_transfer with interpolation weights and alpha, in torch, through the
        # same (random or loaded) networks. float32 on both sides, different summation
        # orders through 38 conv layers: ~1e-6 relative; 1e-4 leaves room, a bug gives ~1.
        tnet = TorchNet(vgg, decoder)
        with torch.no_grad():
            c_t = tnet.encode(torch.from_numpy(content[None]))
            feat = 0
            for w, s in zip((0.67, 0.33), (style_a, style_b)):
                feat = feat + w * torch_adain(c_t, tnet.encode(torch.from_numpy(s[None])))
            feat = 0.5 * feat + 0.5 * c_t
            ref_out = tnet.decoder(feat).numpy()[0]
        mine = decode(adain_target(net.backend, content_feat, [stats_a, stats_b], 0.5, weights=(0.67, 0.33)))
        lesson.check("interpolation 0.67/0.33, alpha 0.5: max |mine - torch test.py| / max |torch|",
                     rel_error(mine, ref_out), 1e-4)
    else:
        # Without torch: CORAL's promise, the content's colour mean, on its own output.
        lesson.check("coral: max |mean(recoloured style) - mean(content)|",
                     max_abs(style_a_kept.mean(axis=(1, 2)), content.mean(axis=(1, 2))), 1e-5)
    return lesson.finish()


def draw_grid(lesson, rows, content, style_a, style_b, filename, title, diff_base=None):
    """The inputs on top, then one row per control with its settings left to right.

    With diff_base (3, H, W), each output is drawn as |output - diff_base| (mean over RGB,
    one colour scale for the whole grid) instead of as a picture.
    """
    columns = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows) + 1, columns, figsize=(2.4 * columns, 2.5 * (len(rows) + 1)))
    if diff_base is not None:
        vmax = max(float(np.abs(img - diff_base).mean(axis=0).max())
                   for cells in rows.values() for label, img in cells if not label.startswith("mask"))

    def show(ax, img, label, as_diff=False):
        if as_diff:
            ax.imshow(np.abs(img - diff_base).mean(axis=0), cmap="magma", vmin=0, vmax=vmax)
        else:
            img = np.asarray(img, dtype=np.float64).transpose(1, 2, 0)  # (H, W, 3)
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(label, fontsize=8)

    for ax, (img, label) in zip(axes[0], ((content, "content"), (style_a, "style a"), (style_b, "style b"))):
        show(ax, img, label)
    for r, (name, cells) in enumerate(rows.items(), start=1):
        axes[r, 0].text(-0.08, 0.5, name, rotation=90, transform=axes[r, 0].transAxes,
                        ha="right", va="center", fontsize=10, fontweight="bold")
        for ax, (label, img) in zip(axes[r], cells):
            show(ax, img, label, diff_base is not None and not label.startswith("mask"))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
        else:
            for spine in ax.spines.values():
                spine.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.02, 0, 1, 0.96))
    lesson.save_figure(fig, filename)


# %% [markdown]
# What to try
# - Interpolate three styles and check the statistics of the mix against the weighted
#   ones.
# - Draw your own mask (any black-and-white PNG) and pass it to `python -m
#   adain_np.stylize --mask`.
# - Exercises: `--exercises` (pixel-space CORAL, style interpolation).


if __name__ == "__main__":
    sys.exit(run(main))
