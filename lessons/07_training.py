"""Lesson 07: training the decoder, a small run on the bundled images.

Run:  python lessons/07_training.py [--quick] [--out FOLDER]

Training is lesson 06's forward and backward in a loop, with an optimiser:
    for each iteration i:
        lr = 1e-4 / (1 + 5e-5 * i)                    (train.py's decay; 1e-3 here, see below)
        c, s = next content batch, next style batch   (resized, randomly cropped)
        L = content_weight * L_c + style_weight * L_s
        grads = dL / d decoder weights                (the encoder stays frozen)
        Adam step on the decoder
This lesson runs that loop through ``adain_np.train``, the module behind
``python -m adain_np.train`` (pytorch-AdaIN's train.py): its Trainer builds the
data loaders, the Net and Adam exactly as the command does, and its ``train_step``
is one iteration. The lesson calls it, watches the losses, and decodes a few
samples as training goes.

What to expect from a CPU and a minute. The paper trains for 160,000 iterations
of batch 8 at 256x256 with the published VGG encoder; here it is a few iterations
of tiny crops with a seeded RANDOM encoder (the published one cannot be downloaded
here). What a few iterations CAN show is the learning rate at work. The lesson runs
the same training twice, from the same decoder on the same batches, at train.py's
lr 1e-4 and at 1e-3, and follows the decoded output of one fixed content/style pair.
Adam's first steps move every weight by about lr, whatever the gradient's size,
and 18 layers of such moves add up. A fresh decoder's output sits well above the
[0, 1] of an image. At 1e-4 the first step brings it close to that range and the
next ones adjust it; at 1e-3 the same step throws it far to the other side, and
the next ones swing it back and forth: each step overshoots, and over those first
steps the losses fall far less than at 1e-4, or even rise (the run prints both). The pictures are drawn
UNCLIPPED, each colour channel stretched from its own minimum to its maximum, with
the picture's full range above it: clipped to [0, 1] they would be flat squares.

Prints: per iteration the losses and the output's min / mean / max at both learning
rates. Draws: 07_training.png (losses, the output's range, the samples); the lr 1e-4
run's own outputs (decoder, checkpoint, losses.csv, loss_curve.png, sample grid) go
to 07_training/ under the output folder.
Check: the decoder update of two training steps against torch.optim.Adam (float64),
that the first step moves the output more at lr 1e-3 than at 1e-4, and (without
--quick) that the loss went down.
"""
import os
import sys
import time

from _common import Lesson, heading, import_torch, plt, rel_error, run

import numpy as np

import adain_np
from adain_np import train
from adain_np.backend import NumpyBackend
from adain_np.images import center_crop, load_image, resize_shorter, sample_path, to_tensor
from adain_np.optim import Adam


def sample_images(names, size):
    """Bundled images, shorter side resized and centre-cropped: (n, 3, size, size)."""
    return np.stack([to_tensor(center_crop(resize_shorter(load_image(sample_path(n)), size), size))
                     for n in names])


def output_range(net, contents, styles):
    """(min, mean, max) of the decoded fixed sample: where the decoder's output lives."""
    out = train.stylize_grid(net, contents, styles)                  # (1, 1, 3, S, S)
    return float(out.min()), float(out.mean()), float(out.max()), out[0, 0]


def main():
    lesson = Lesson(__doc__)
    if lesson.quick:
        batch, image_size, crop, iterations = 1, 24, 16, 3
    else:
        batch, image_size, crop, iterations = 2, 48, 32, 12
    snapshots = sorted({0, 1, 2, iterations})
    rates = (1e-4, 1e-3)

    # %% ------------------------------------------------------------------------------
    # 1. Set up exactly as `python -m adain_np.train` does, from its own argument parser.
    # No --content_dir/--style_dir: the bundled images (5 contents, 5 styles). Two
    # trainers with the same seed: the same initial decoder and the same batches, so the
    # learning rate is the only difference. The lr 1e-4 run writes the command's outputs.
    heading("1. the Trainer of adain_np.train, twice")
    trainers = {}
    for lr in rates:
        run_dir = os.path.join(lesson.out, "07_training" if lr == rates[0] else "07_training_lr1e-3")
        log_path = os.path.join(run_dir, "logs", train.LOSS_LOG_NAME)
        if os.path.exists(log_path):
            os.remove(log_path)  # this lesson's own log from an earlier run (train.py would keep it)
        argv = ["--device", "cpu", "--seed", "0", "--lr", str(lr), "--batch_size", str(batch),
                "--image_size", str(image_size), "--crop_size", str(crop), "--max_iter", str(iterations),
                "--save_model_interval", str(iterations), "--n_threads", "2",
                "--save_dir", os.path.join(run_dir, "experiments"), "--log_dir", os.path.join(run_dir, "logs")]
        print("python -m adain_np.train " + " ".join(argv))
        trainers[lr] = train.build_trainer(train.parse_args(argv))   # prints a note: random encoder
    print(f"batches of {batch} crops of {crop}x{crop} from images resized to {image_size}x{image_size}; "
          f"{iterations} iterations at each lr")
    run_dir = os.path.join(lesson.out, "07_training")

    # The sample to watch: one content in one style, at the crop size (cheap to decode).
    contents = sample_images(["chelsea"], crop)                      # (1, 3, S, S)
    styles = sample_images(["stained_glass"], crop)

    # %% ------------------------------------------------------------------------------
    # 2. The loop. train_step() is one iteration of train.py: it sets the lr, draws the
    # next batches, runs Net.forward and Net.backward, and takes an Adam step. It returns
    # the weighted losses (content_weight * L_c, style_weight * L_s), as train.py logs them,
    # and the lr it used.
    heading("2. training at lr 1e-4 and 1e-3, the decoded sample's range after each step")
    history = {lr: [] for lr in rates}                               # (loss_c, loss_s) per step
    ranges = {lr: [] for lr in rates}                                # (min, mean, max) per step
    samples = {lr: {} for lr in rates}
    try:
        for lr, trainer in trainers.items():
            for i in range(iterations + 1):
                low, mean, high, picture = output_range(trainer.net, contents, styles)
                ranges[lr].append((low, mean, high))
                if i in snapshots:
                    samples[lr][i] = picture
                if i == iterations:
                    break
                started = time.perf_counter()
                loss_c, loss_s = trainer.train_step()[:2]
                seconds = time.perf_counter() - started
                history[lr].append((loss_c, loss_s))
                if i < 3 or (i + 1) % max(1, iterations // 8) == 0:
                    print(f"lr {lr:.0e} iteration {i + 1:>3}: content {loss_c:10.2f}  style {loss_s:11.2f}"
                          f"  output min {low:8.2f} mean {mean:8.2f} max {high:8.2f} (before the step)"
                          f"  {seconds:.2f} s")
        # What the command writes at a save interval: decoder_iter_N.npz / .pth.tar (a torch
        # state dict pytorch-AdaIN's test.py loads), checkpoint.npz, samples_iter_N.png, and
        # the loss curve from losses.csv; only for the lr 1e-4 run. --quick writes just the
        # checkpoint and the loss curve: the sample grid is drawn at 128 px or more, and
        # that alone would take longer than the whole quick lesson.
        if lesson.quick:
            trainers[rates[0]].save_checkpoint()
            trainers[rates[0]].save_loss_curve()
        else:
            trainers[rates[0]].save_outputs()
    finally:
        for trainer in trainers.values():
            trainer.content_loader.close()
            trainer.style_loader.close()
    print(f"the lr 1e-4 run's own outputs: {os.path.relpath(run_dir)}/experiments and /logs")
    for lr in rates:
        means = " -> ".join(f"{m:.2f}" for _, m, _ in ranges[lr])
        print(f"lr {lr:.0e}: output mean after each step {means}; widest range "
              f"[{min(r[0] for r in ranges[lr]):.2f}, {max(r[2] for r in ranges[lr]):.2f}]")
    totals = {lr: np.array(history[lr]).sum(axis=1) for lr in rates}  # (iterations,)

    # %% ------------------------------------------------------------------------------
    # Figure: the losses, the output's range, and the samples at each snapshot (unclipped).
    columns = len(snapshots)
    fig = plt.figure(figsize=(7 + 1.9 * columns, 5.4))
    grid = fig.add_gridspec(2, columns + 2, width_ratios=[2.2, 2.2] + [1] * columns)
    ax = fig.add_subplot(grid[:, 0])
    steps = np.arange(1, iterations + 1)
    for k, lr in enumerate(rates):
        ax.semilogy(steps, totals[lr], "o-", color=f"C{k}", label=f"lr {lr:.0e}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss (log); each step is a new batch")
    ax.set_title("total loss")
    ax.legend()
    ax = fig.add_subplot(grid[:, 1])
    for k, lr in enumerate(rates):
        r = np.array(ranges[lr])                                     # (iterations + 1, 3)
        ax.fill_between(np.arange(len(r)), r[:, 0], r[:, 2], color=f"C{k}", alpha=0.25)
        ax.plot(np.arange(len(r)), r[:, 1], "o-", color=f"C{k}", label=f"lr {lr:.0e}: mean, min-max")
    ax.axhspan(0, 1, color="0.85", zorder=0, label="an image's [0, 1]")
    ax.set_xlabel("iterations done")
    ax.set_ylabel("decoded sample's values")
    ax.set_title("where the output lives")
    ax.legend(fontsize=8)
    for row, lr in enumerate(rates):
        for col, i in enumerate(snapshots):
            picture = samples[lr][i].transpose(1, 2, 0)              # (S, S, 3)
            low, high = float(picture.min()), float(picture.max())
            # Each colour channel stretched from its own min to its max: one channel's offset
            # would otherwise turn the picture into a flat square of one colour.
            lows, highs = picture.min(axis=(0, 1)), picture.max(axis=(0, 1))
            sub = fig.add_subplot(grid[row, col + 2])
            sub.imshow((picture - lows) / np.maximum(highs - lows, 1e-12), interpolation="nearest")
            sub.set_xticks([])
            sub.set_yticks([])
            sub.set_title(f"it {i}: [{low:.1f}, {high:.1f}]", fontsize=8)
            if col == 0:
                sub.set_ylabel(f"lr {lr:.0e}", fontsize=9)
    fig.suptitle(f"{iterations} iterations, random encoder: the learning rate sets how far each "
                 "step throws the output\n(samples: each channel stretched from its min to its max; the full range above each)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    lesson.save_figure(fig, "07_training.png")

    # %% ------------------------------------------------------------------------------
    # Checks.
    heading("checks")
    # Adam's first step moves each weight by about lr (m_hat / sqrt(v_hat) = sign(g)), so the
    # first step at 1e-3 moves the output further than at 1e-4 (not exactly ten times: the
    # output is not linear in 18 layers of weights). Checked as the ratio of the two moves of
    # the output's mean, which must be below 1.
    first_move = {lr: abs(ranges[lr][1][1] - ranges[lr][0][1]) for lr in rates}
    lesson.check("first step: |move of output mean| at lr 1e-4 / at lr 1e-3",
                 first_move[1e-4] / max(first_move[1e-3], 1e-300), 1.0)
    # The loss went down: the mean of the last quarter against the first quarter (each
    # batch is different images, so single losses jump; quarter means smooth that). With
    # --quick's 3 iterations that is noise, so it is only printed.
    total = totals[rates[0]]
    quarter = max(1, iterations // 4)
    ratio = total[-quarter:].mean() / total[:quarter].mean()
    if lesson.quick:
        print(f"lr 1e-4: loss of the last quarter / first quarter = {ratio:.2f} (3 iterations: not a test)")
    else:
        lesson.check("lr 1e-4: loss of the last quarter / first quarter", ratio, 1.0)

    # The update itself, against torch: what train_step does (Net.forward, Net.backward,
    # set the lr by train.py's schedule, Adam.step) twice on a fixed batch, in float64.
    # Lesson 06 checked the gradients against torch's autograd; here the same gradients go
    # into torch.optim.Adam, and the two optimisers' updates are compared. float64 on both
    # sides: they agree to ~1e-15 of the update; a wrong lr, bias correction or moment
    # update shows at 1e-3 or more.
    torch = import_torch()
    if torch is None:
        print("the torch comparison of the optimiser is skipped (torch not installed)")
        return lesson.finish()
    rng = np.random.default_rng(1)
    content_batch = rng.random((1, 3, 16, 16))                        # (1, 3, 16, 16)
    style_batch = rng.random((1, 3, 16, 16))
    vgg = {k: v.astype(np.float64) for k, v in adain_np.init_vgg_params(0).items()}
    decoder = {k: v.astype(np.float64) for k, v in adain_np.init_decoder_params(0).items()}
    initial = {k: v.copy() for k, v in decoder.items()}               # to measure the updates
    net = adain_np.Net(vgg, decoder, NumpyBackend(np.float64))
    optimizer = Adam(net.decoder_params, lr=1e-3)
    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in initial.items()}
    toptimizer = torch.optim.Adam(list(torch_params.values()), lr=1e-3)
    for i in range(2):
        lr = train.learning_rate(1e-3, 5e-5, i)
        net.forward(content_batch, style_batch)
        grads = net.backward(1.0, 10.0)
        for key, param in torch_params.items():
            param.grad = torch.tensor(grads[key])                     # the same gradient for both
        optimizer.lr = lr
        optimizer.step(grads)
        for group in toptimizer.param_groups:
            group["lr"] = lr
        toptimizer.step()
    worst = max(rel_error(net.decoder_params[k] - initial[k], torch_params[k].detach().numpy() - initial[k])
                for k in initial)
    lesson.check("2 training steps, float64: worst max |update - torch.optim.Adam's| / max |torch's| "
                 "over 18 decoder tensors", worst, 1e-10)
    return lesson.finish()


# %% [markdown]
# What to try
# - Try lr 3e-4: does the output still overshoot?
# - Run without --quick and compare the loss ratio at the two learning rates.
# - Exercises: `--exercises` (Adam by hand, the learning-rate decay).


if __name__ == "__main__":
    sys.exit(run(main))
