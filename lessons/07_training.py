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
of batch 8 at 256x256 with the published VGG encoder; here it is a few dozen
iterations of tiny crops with a seeded RANDOM encoder (the published one cannot be
downloaded here). The loss falls steeply at first: a fresh decoder's output is far
from anything, and the first steps fix its overall scale and colour. The samples
go from noise to smooth fields of colour; in a run this short they hardly depend
on the content or the style yet. Texture and strokes need the real encoder and
hours of training.

Prints: the losses every few iterations, the time per step. Draws: 07_training.png
(loss curves and samples over time); the run's own outputs (decoder, checkpoint,
losses.csv, loss_curve.png) go to 07_training/ under the output folder.
Check: the decoder update of two training steps against torch.optim.Adam (float64), and
(without --quick) that the loss went down.
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


def main():
    lesson = Lesson(__doc__)
    if lesson.quick:
        batch, image_size, crop, iterations = 1, 24, 16, 3
        snapshots = [0, iterations]
    else:
        batch, image_size, crop, iterations = 2, 48, 32, 24
        snapshots = [0, iterations // 4, iterations // 2, iterations]
    sample_size = crop if lesson.quick else 2 * crop
    run_dir = os.path.join(lesson.out, "07_training")

    # ------------------------------------------------------------------------------
    # 1. Set up exactly as `python -m adain_np.train` does, from its own argument parser.
    # No --content_dir/--style_dir: the bundled images (5 contents, 5 styles). lr 1e-3 is
    # the command's default for the bundled images: 1e-4 (train.py's) moves too little in
    # a few dozen steps to see.
    heading("1. the Trainer of adain_np.train")
    log_path = os.path.join(run_dir, "logs", train.LOSS_LOG_NAME)
    if os.path.exists(log_path):
        os.remove(log_path)  # this lesson's own log from an earlier run (train.py would keep it)
    argv = ["--device", "cpu", "--seed", "0", "--lr", "1e-3", "--batch_size", str(batch),
            "--image_size", str(image_size), "--crop_size", str(crop), "--max_iter", str(iterations),
            "--save_model_interval", str(iterations), "--n_threads", "2",
            "--save_dir", os.path.join(run_dir, "experiments"), "--log_dir", os.path.join(run_dir, "logs")]
    print("python -m adain_np.train " + " ".join(argv))
    args = train.parse_args(argv)
    trainer = train.build_trainer(args)                              # prints a note: random encoder
    print(f"batches of {batch} crops of {crop}x{crop} from images resized to {image_size}x{image_size}; "
          f"{iterations} iterations")

    # Samples to watch: 2 contents x 2 styles, decoded at the snapshots.
    contents = sample_images(["chelsea", "astronaut"], sample_size)  # (2, 3, S, S)
    styles = sample_images(["stained_glass", "swirls"], sample_size)
    samples = {}

    # ------------------------------------------------------------------------------
    # 2. The loop. train_step() is one iteration of train.py: it sets the lr, draws the
    # next batches, runs Net.forward and Net.backward, and takes an Adam step. It returns
    # the weighted losses (content_weight * L_c, style_weight * L_s), as train.py logs them,
    # and the lr it used.
    heading("2. training")
    history = []
    try:
        for i in range(iterations + 1):
            if i in snapshots:
                samples[i] = train.stylize_grid(trainer.net, contents, styles)  # (2, 2, 3, S, S)
            if i == iterations:
                break
            started = time.perf_counter()
            loss_c, loss_s, lr = trainer.train_step()[:3]
            seconds = time.perf_counter() - started
            history.append((loss_c, loss_s))
            if i < 3 or (i + 1) % max(1, iterations // 8) == 0:
                print(f"iteration {i + 1:>3}: content {loss_c:10.2f}  style {loss_s:11.2f}  "
                      f"lr {lr:.2e}  {seconds:.2f} s")
        # What the command writes at a save interval: decoder_iter_N.npz / .pth.tar (a torch
        # state dict pytorch-AdaIN's test.py loads), checkpoint.npz, samples_iter_N.png, and
        # the loss curve from losses.csv.
        trainer.save_outputs()
    finally:
        trainer.content_loader.close()
        trainer.style_loader.close()
    print(f"the run's own outputs: {os.path.relpath(run_dir)}/experiments and /logs")
    history = np.array(history)                                      # (iterations, 2)
    total = history[:, 0] + history[:, 1]

    # ------------------------------------------------------------------------------
    # Figure: the losses, and the samples at each snapshot.
    pairs = [(0, 0, "chelsea x glass"), (1, 1, "astronaut x swirls"), (0, 1, "chelsea x swirls")]
    columns = len(snapshots)
    fig = plt.figure(figsize=(3.5 + 2.2 * columns, 7))
    grid = fig.add_gridspec(len(pairs), columns + 1, width_ratios=[2] + [1] * columns)
    ax = fig.add_subplot(grid[:, 0])
    steps = np.arange(1, iterations + 1)
    ax.semilogy(steps, total, color="0.6", lw=3, label="total")
    ax.semilogy(steps, history[:, 1], color="C1", label="style (x10)")
    ax.semilogy(steps, history[:, 0], color="C0", label="content (x1)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss (log); each step is a new batch")
    ax.set_title("losses")
    ax.legend()
    for col, i in enumerate(snapshots):
        for row, (c, s, label) in enumerate(pairs):
            sub = fig.add_subplot(grid[row, col + 1])
            sub.imshow(np.clip(samples[i][c, s].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            sub.set_xticks([])
            sub.set_yticks([])
            if row == 0:
                sub.set_title(f"iteration {i}", fontsize=9)
            if col == 0:
                sub.set_ylabel(label, fontsize=8)
    fig.suptitle(f"{iterations} iterations on the CPU with a random encoder: the decoder learns the "
                 "output's scale and colour; strokes would need the real VGG and hours", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    lesson.save_figure(fig, "07_training.png")

    # ------------------------------------------------------------------------------
    # Checks.
    heading("checks")
    # The loss went down: the mean of the last quarter against the first quarter (each
    # batch is different images, so single losses jump; quarter means smooth that). With
    # --quick's 3 iterations that is noise, so it is only printed.
    quarter = max(1, iterations // 4)
    ratio = total[-quarter:].mean() / total[:quarter].mean()
    if lesson.quick:
        print(f"loss of the last quarter / first quarter = {ratio:.2f} (3 iterations: not a test)")
    else:
        lesson.check("loss of the last quarter / first quarter", ratio, 1.0)

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


if __name__ == "__main__":
    sys.exit(run(main))
