"""Train an AdaIN decoder: ``python -m adain_np.train``, a drop-in for pytorch-AdaIN's train.py.

Same flags, defaults and loop as train.py: Adam on the decoder, ``lr / (1 + lr_decay * i)``
set before every step, weighted content and style losses, and ``decoder_iter_{i}`` saved
every ``--save_model_interval`` iterations and at the end. Added:

* ``--seed``: the data order, the crops and the decoder's initial weights follow from it,
  so a run is repeatable; ``--resume save_dir/checkpoint.npz`` continues one with the
  same losses as if it had never stopped. Ctrl-C saves that checkpoint and exits.
* Outputs: a progress line on stderr, ``log_dir/losses.csv`` (one row per iteration,
  the content/style columns weighted as train.py logs them), ``log_dir/loss_curve.png``,
  and per save ``decoder_iter_{i}.npz``, ``decoder_iter_{i}.pth.tar`` (a torch state
  dict that pytorch-AdaIN's test.py loads) and ``samples_iter_{i}.png``.
* With neither ``--content_dir`` nor ``--style_dir``, it trains briefly on the images
  bundled with the package (see SAMPLE_DEFAULTS). Without the published VGG weights at
  the default path it uses a seeded random encoder: the mechanics then run end to end,
  and the pictures carry over colour and texture statistics, not a painter's style.
"""
import math
import os
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from adain_np import pth
from adain_np.backend import DeviceError, select_backend
from adain_np.checkpoint import (CheckpointError, TrainingState, load_checkpoint, save_checkpoint,
                                 save_decoder_npz)
from adain_np.cli import (DEFAULT_VGG, DOWNLOAD_COMMAND, ArgumentParser, UserError, add_conv_flag,
                          add_device_flag, apply_conv_flag, run_cli)
from adain_np.dataset import BatchLoader, FlatFolderDataset
from adain_np.files import BadFileError
from adain_np.images import (MAX_RESIZED_PIXELS, center_crop, load_image, resize_shorter,
                             sample_dir, sample_images, to_tensor)
from adain_np.loss_log import LossLog
from adain_np.net import Net, adain_target
from adain_np.optim import Adam
from adain_np.param_files import load_params
from adain_np.params import MIN_IMAGE_SIDE, init_decoder_params, init_vgg_params

MAX_RESUME_PASSES = 10**6  # sampler passes a resumed run may replay (each is one permutation)
RANDOM_ENCODER_SEED = 0  # the stand-in encoder is the same for every run, as the real one is
CHECKPOINT_NAME = "checkpoint.npz"
LOSS_LOG_NAME = "losses.csv"
LOSS_CURVE_NAME = "loss_curve.png"
MIN_CROP = MIN_IMAGE_SIDE  # three ceil-mode pools leave 2 px at relu4_1, the least a reflection pad takes

# Defaults that depend on the data: train.py's, and a short run on the bundled samples.
# The sample run keeps train.py's learning rate: 1e-3 was tried and gave blobs and a
# style loss 5x higher after 250 iterations.
TRAIN_DEFAULTS = dict(image_size=512, crop_size=256, batch_size=8, max_iter=160000,
                      save_model_interval=10000)
SAMPLE_DEFAULTS = dict(image_size=128, crop_size=64, batch_size=4, max_iter=250,
                       save_model_interval=125)


# ---------------------------------------------------------------- command line

def build_parser():
    parser = ArgumentParser(
        prog="python -m adain_np.train",
        description="Train an AdaIN decoder (pytorch-AdaIN's train.py in NumPy). Without "
                    "--content_dir/--style_dir it trains briefly on the bundled sample images.")

    def with_default(name):
        return (f"default {TRAIN_DEFAULTS[name]:g}; "
                f"{SAMPLE_DEFAULTS[name]:g} on the bundled samples")

    add = parser.add_argument
    add("--content_dir", help="folder of content images (default: the bundled samples)")
    add("--style_dir", help="folder of style images (default: the bundled samples)")
    add("--vgg", help=f"VGG weights (.pth or .npz; default {DEFAULT_VGG}, or a seeded random "
                      "encoder if that file is missing)")
    add("--save_dir", default="./experiments", help="where to save the models and samples (default %(default)s)")
    add("--log_dir", default="./logs", help="where to save the loss log and curve (default %(default)s)")
    add("--lr", type=float, default=1e-4, help="learning rate (default %(default)s)")
    add("--lr_decay", type=float, default=5e-5, help="lr_i = lr / (1 + lr_decay * i) (default %(default)s)")
    add("--max_iter", type=int, help=with_default("max_iter"))
    add("--batch_size", type=int, help=with_default("batch_size"))
    add("--style_weight", type=float, default=10.0, help="(default %(default)s)")
    add("--content_weight", type=float, default=1.0, help="(default %(default)s)")
    add("--n_threads", type=int, default=16, help="image loading threads (default %(default)s)")
    add("--save_model_interval", type=int, help=with_default("save_model_interval"))
    add_device_flag(parser, "auto: the CUDA kernels if a GPU is usable, else NumPy (default auto)")
    add_conv_flag(parser)
    from adain_np.dist import add_dist_flags  # mpi4py itself loads only with --dist
    add_dist_flags(parser)
    add("--seed", type=int, help="seeds the data order, crops and decoder init (default 0; "
                                 "with --resume, the checkpoint's)")
    add("--resume", metavar="PATH", help="continue from a checkpoint (save_dir/checkpoint.npz)")
    add("--image_size", type=int, help=f"images are resized to this square ({with_default('image_size')})")
    add("--crop_size", type=int, help=f"then randomly cropped to this ({with_default('crop_size')})")
    return parser


def parse_args(argv):
    return fill_defaults(build_parser().parse_args(argv))  # usage errors: one line, exit 2


def fill_defaults(args):
    """Pick train.py's or the bundled-sample defaults, then check every number."""
    if (args.content_dir is None) != (args.style_dir is None):
        raise UserError("give both --content_dir and --style_dir, or neither to train on "
                        "the bundled sample images")
    args.bundled = args.content_dir is None
    if args.bundled:
        args.content_dir, args.style_dir = sample_dir("content"), sample_dir("style")
    defaults = SAMPLE_DEFAULTS if args.bundled else TRAIN_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_numbers(args)
    return args


def check_numbers(args):
    checks = [
        (args.max_iter >= 1, f"--max_iter must be at least 1, got {args.max_iter}"),
        (args.save_model_interval >= 1,
         f"--save_model_interval must be at least 1, got {args.save_model_interval}"),
        (args.batch_size >= 1, f"--batch_size must be at least 1, got {args.batch_size}"),
        (args.n_threads >= 0, f"--n_threads must be >= 0, got {args.n_threads}"),
        (math.isfinite(args.lr) and args.lr > 0, f"--lr must be a positive number, got {args.lr}"),
        (math.isfinite(args.lr_decay) and args.lr_decay >= 0,
         f"--lr_decay must be >= 0, got {args.lr_decay}"),
        (math.isfinite(args.style_weight) and args.style_weight >= 0,
         f"--style_weight must be >= 0, got {args.style_weight}"),
        (math.isfinite(args.content_weight) and args.content_weight >= 0,
         f"--content_weight must be >= 0, got {args.content_weight}"),
        (args.seed is None or args.seed >= 0, f"--seed must be >= 0, got {args.seed}"),
        (args.crop_size >= MIN_CROP, f"--crop_size must be at least {MIN_CROP}, got {args.crop_size}"),
        (args.image_size >= args.crop_size,
         f"--image_size {args.image_size} is smaller than --crop_size {args.crop_size}"),
        (args.image_size ** 2 <= MAX_RESIZED_PIXELS,
         f"--image_size {args.image_size} is too large (at most {math.isqrt(MAX_RESIZED_PIXELS)})"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


# ---------------------------------------------------------------- set-up

def backend_for_flag(device):
    """The backend for --device (see backend.select_backend); an auto fallback says why in one line."""
    try:
        backend, fallback = select_backend(device)
    except DeviceError as err:
        raise UserError(f"--device {err}") from None
    if fallback:
        print(f"note: {fallback}; training on the CPU with NumPy", file=sys.stderr)
    return backend


def load_encoder(vgg_path):
    """(vgg params, description). An explicit missing --vgg is an error; the default is optional."""
    path = DEFAULT_VGG if vgg_path is None else vgg_path
    if vgg_path is None and not os.path.exists(path):
        print(f"note: {DEFAULT_VGG} not found: using a seeded random encoder, so the samples "
              "carry colour and texture statistics, not a painter's style "
              f"({DOWNLOAD_COMMAND} fetches the real one)", file=sys.stderr)
        return init_vgg_params(RANDOM_ENCODER_SEED), f"random:{RANDOM_ENCODER_SEED}"
    if not os.path.exists(path):
        raise UserError(f"--vgg {path}: no such file")
    try:
        return load_params(path, "vgg"), os.path.abspath(path)
    except BadFileError as err:
        raise UserError(str(err)) from None


def make_loaders(args, seed):
    """Content and style BatchLoaders; their seeds differ so the two streams are independent."""
    datasets = [FlatFolderDataset(folder, args.image_size, args.crop_size)
                for folder in (args.content_dir, args.style_dir)]
    return [BatchLoader(dataset, args.batch_size, 2 * seed + offset, args.n_threads)
            for offset, dataset in enumerate(datasets)]


def learning_rate(lr, lr_decay, iteration):
    """train.py's adjust_learning_rate: the rate for 0-based `iteration`."""
    return lr / (1.0 + lr_decay * iteration)


def sample_grid_size(crop_size):
    """Side of the sample stylizations: the crop size, but at least 128 px so the
    pictures can be read, and at most 256 px so they stay cheap to make."""
    return min(max(crop_size, 128), 256)


def load_sample_pair(size):
    """The bundled contents and styles as (n, 3, size, size): shorter side resized, centre crop."""
    def load(kind):
        return np.stack([to_tensor(center_crop(resize_shorter(load_image(p), size), size))
                         for p in sample_images(kind)])  # (n, 3, size, size)
    return load("content"), load("style")


# ---------------------------------------------------------------- what a run writes

class ProgressBar:
    """The training status line, drawn by tqdm: it/s, losses, lr and ETA.

    On a terminal tqdm redraws it in place; elsewhere (a log file, a pipe) a plain line is
    written at the first and last iteration and every `log_every_s` seconds, in tqdm's format.
    """

    FORMAT = "iter {n_fmt}/{total_fmt}  {rate_fmt}  {losses}  ETA {remaining}"

    def __init__(self, first, total, stream=None, log_every_s=30.0):
        self.stream = stream or sys.stderr
        self.first, self.total = first, total
        self.start = self.last_line = time.perf_counter()
        self.log_every_s = log_every_s
        self.bar = None
        if hasattr(self.stream, "isatty") and self.stream.isatty():
            self.bar = tqdm(total=total, initial=first, file=self.stream, mininterval=0.2,
                            bar_format=self._format(""))

    def update(self, iteration, loss_content, loss_style, lr):
        losses = f"loss_c {loss_content:.4f}  loss_s {loss_style:.4f}  lr {lr:.3g}"
        if self.bar is not None:
            self.bar.bar_format = self._format(losses)
            self.bar.update(iteration - self.bar.n)
            return
        now = time.perf_counter()
        done = iteration - self.first
        if done == 1 or iteration == self.total or now - self.last_line >= self.log_every_s:
            text = tqdm.format_meter(iteration, self.total, now - self.start, bar_format=self.FORMAT,
                                     initial=self.first, rate=done / max(now - self.start, 1e-9),
                                     losses=losses)
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_line = now

    def _format(self, losses):
        return self.FORMAT.replace("{losses}", losses)  # the text has no braces

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------- training

class Diverged(Exception):
    """A loss came out NaN or infinite."""


class deferred_interrupts:
    """Hold Ctrl-C until the block ends, so an Adam step is never half applied.

    On leaving, a held Ctrl-C is re-raised through the previous handler. Only the main
    thread can set signal handlers; elsewhere this does nothing.
    """

    def __enter__(self):
        self.held = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        self.held = True

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.held:
                signal.raise_signal(signal.SIGINT)


class Trainer:
    """train.py's loop, with checkpoints. `iteration` counts completed iterations."""

    def __init__(self, args, net, optimizer, loaders, log, meta, iteration=0, last_checkpoint=None):
        self.args, self.net, self.optimizer = args, net, optimizer
        self.content_loader, self.style_loader = loaders
        self.log = log
        self.meta = meta                     # seed, encoder, settings: saved with every checkpoint
        self.iteration = iteration
        self.last_checkpoint = last_checkpoint  # (path, iteration) of the newest good one
        self.checkpoint_path = os.path.join(args.save_dir, CHECKPOINT_NAME)
        self._samples = None

    def run(self, progress):
        args = self.args
        while self.iteration < args.max_iter:
            loss_content, loss_style, lr = self.train_step()
            progress.update(self.iteration, loss_content, loss_style, lr)
            if self.iteration % args.save_model_interval == 0 or self.iteration == args.max_iter:
                self.save_outputs()

    def train_step(self):
        """One iteration of train.py's loop. Returns the weighted losses and the lr used."""
        args, i = self.args, self.iteration
        started = time.perf_counter()
        lr = learning_rate(args.lr, args.lr_decay, i)
        content_images = self.content_loader.next_batch()  # (B, 3, crop, crop)
        style_images = self.style_loader.next_batch()      # (B, 3, crop, crop)
        loss_c, loss_s = self.net.forward(content_images, style_images)
        loss_content, loss_style = args.content_weight * loss_c, args.style_weight * loss_s
        loss = loss_content + loss_style
        if not math.isfinite(loss):
            raise Diverged(f"the loss became {loss} at iteration {i + 1} "
                           f"(loss_content {loss_content}, loss_style {loss_style})")
        grads = self.net.backward(args.content_weight, args.style_weight)
        if not all_finite(self.net.backend.xp, grads.values()):
            raise Diverged(f"a decoder gradient became NaN or infinite at iteration {i + 1}")
        with deferred_interrupts():  # the step, the count and the log row go together
            self.optimizer.lr = lr
            self.optimizer.step(grads)
            self.iteration = i + 1
            seconds = time.perf_counter() - started
            self.log.append(iteration=i + 1, lr=lr, loss_content=loss_content,
                            loss_style=loss_style, loss=loss, seconds=round(seconds, 4))
        return loss_content, loss_style, lr

    # --- saving ---------------------------------------------------------------
    def host_decoder(self):
        to_host = self.net.backend.to_host
        return {key: to_host(value) for key, value in self.net.decoder_params.items()}

    def training_state(self):
        to_host = self.net.backend.to_host
        loaders = {}
        for name, loader in (("content_loader", self.content_loader),
                             ("style_loader", self.style_loader)):
            # One batch per completed iteration: a batch drawn for an unfinished one is redrawn.
            loaders[name] = dict(loader.state(), batches_consumed=self.iteration)
        return TrainingState(
            decoder=self.host_decoder(),
            adam_m={k: to_host(v) for k, v in self.optimizer.m.items()},
            adam_v={k: to_host(v) for k, v in self.optimizer.v.items()},
            adam_step=self.optimizer.step_count, iteration=self.iteration,
            meta=dict(self.meta, **loaders))

    def save_checkpoint(self):
        save_checkpoint(self.training_state(), self.checkpoint_path)
        self.last_checkpoint = (self.checkpoint_path, self.iteration)

    def save_outputs(self):
        """What train.py saves at an interval, plus the checkpoint, the samples and the curve."""
        i, save_dir = self.iteration, self.args.save_dir
        decoder = self.host_decoder()
        save_decoder_npz(decoder, os.path.join(save_dir, f"decoder_iter_{i}.npz"))
        pth.save_state_dict(decoder, os.path.join(save_dir, f"decoder_iter_{i}.pth.tar"))
        self.save_checkpoint()
        self.save_samples(os.path.join(save_dir, f"samples_iter_{i}.png"))
        self.save_loss_curve()

    def save_samples(self, path):
        from adain_np.plots import save_sample_grid  # matplotlib loads only when a plot is due
        if self._samples is None:
            self._samples = load_sample_pair(sample_grid_size(self.args.crop_size))
        contents, styles = self._samples
        save_sample_grid(contents, styles, stylize_grid(self.net, contents, styles), path,
                         title=f"iteration {self.iteration}")

    def save_loss_curve(self):
        from adain_np.plots import plot_loss_curve
        rows = self.log.read()
        if not rows:
            return
        iterations = [int(row["iteration"]) for row in rows]
        losses = {name: [float(row[name]) for row in rows]
                  for name in ("loss_content", "loss_style")}  # train.py's two scalars
        plot_loss_curve(iterations, losses, os.path.join(self.args.log_dir, LOSS_CURVE_NAME))


def all_finite(xp, arrays):
    # One reduction on the device and one host read per step, not one per tensor.
    return bool(xp.stack([xp.isfinite(a).all() for a in arrays]).all())


def stylize_grid(net, contents, styles):
    """Every content in every style: (R, 3, S, S), (C, 3, S, S) -> (R, C, 3, S, S) on the host."""
    b = net.backend
    content_feats = net.encode(b.asarray(contents))                # (R, 512, s, s)
    style_mean, style_std = b.mean_std(net.encode(b.asarray(styles)))  # (C, 512, 1, 1) each
    columns = []
    for c in range(len(styles)):
        t = adain_target(b, content_feats, [(style_mean[c:c + 1], style_std[c:c + 1])])
        columns.append(b.to_host(net.decode(t)))                   # (R, 3, S, S)
    return np.stack(columns, axis=1)


# ---------------------------------------------------------------- putting it together

def start_state(args):
    """(decoder params, TrainingState or None): a fresh seeded decoder, or the --resume one."""
    if args.resume is None:
        args.seed = 0 if args.seed is None else args.seed
        return init_decoder_params(args.seed), None
    try:
        state = load_checkpoint(args.resume)
    except CheckpointError as err:
        raise UserError(str(err)) from None
    for name in ("content_loader", "style_loader"):
        if not isinstance(state.meta.get(name), dict) or \
                not isinstance(state.meta[name].get("batches_consumed"), int):
            raise UserError(f"{args.resume}: damaged checkpoint: no {name} position")
    if args.seed is None:
        args.seed = state.meta.get("seed", 0)
    if state.iteration >= args.max_iter:
        raise UserError(f"{args.resume} is already at iteration {state.iteration} "
                        f"(--max_iter {args.max_iter}): raise --max_iter to train further")
    return state.decoder, state


def run_settings(args, encoder):
    """The settings a resumed run must share to reproduce the same losses."""
    return {"seed": args.seed, "encoder": encoder, "lr": args.lr, "lr_decay": args.lr_decay,
            "batch_size": args.batch_size, "image_size": args.image_size,
            "crop_size": args.crop_size, "content_weight": args.content_weight,
            "style_weight": args.style_weight}


def warn_changed_settings(saved, current):
    for name, value in current.items():
        if name in saved and saved[name] != value:
            print(f"note: resuming with {name} {value} (the checkpoint had {saved[name]}): "
                  "the losses will differ from an uninterrupted run", file=sys.stderr)


def restore(trainer, state):
    """Put the checkpoint's Adam state and data position into a fresh trainer."""
    b = trainer.net.backend
    optimizer = trainer.optimizer
    for key in optimizer.m:
        optimizer.m[key] = b.asarray(state.adam_m[key])
        optimizer.v[key] = b.asarray(state.adam_v[key])
    optimizer.step_count = state.adam_step
    for name, loader in (("content_loader", trainer.content_loader),
                         ("style_loader", trainer.style_loader)):
        # The seed and batch size were compared already (warn_changed_settings).
        saved = {k: v for k, v in state.meta[name].items() if k not in ("seed", "batch_size")}
        passes = saved["batches_consumed"] * loader.batch_size // max(1, len(loader.dataset))
        if passes > MAX_RESUME_PASSES:  # the sampler replays every pass: refuse, never hang
            raise UserError(f"{trainer.args.resume}: {name} is {passes} passes over the"
                            f" {len(loader.dataset)} images in; resuming would take too long")
        loader.set_state(saved)


def build_trainer(args):
    decoder, state = start_state(args)
    vgg, encoder = load_encoder(args.vgg)
    settings = run_settings(args, encoder)
    if state is not None:
        warn_changed_settings(state.meta.get("settings", {}), settings)
    backend = backend_for_flag(args.device)
    net = Net(vgg, decoder, backend)
    optimizer = Adam(net.decoder_params, lr=args.lr, backend=backend)
    loaders = make_loaders(args, args.seed)
    log = LossLog(os.path.join(args.log_dir, LOSS_LOG_NAME))
    try:
        os.makedirs(args.save_dir, exist_ok=True)
        log.start(None if state is None else state.iteration)
    except OSError as err:
        for loader in loaders:
            loader.close()
        raise UserError(f"cannot write to {args.save_dir} or {args.log_dir}: "
                        f"{err.strerror or err}") from None
    meta = {"seed": args.seed, "settings": settings}
    if state is None:
        return Trainer(args, net, optimizer, loaders, log, meta)
    trainer = Trainer(args, net, optimizer, loaders, log, meta, state.iteration,
                      (args.resume, state.iteration))
    restore(trainer, state)
    return trainer


def describe_last_checkpoint(trainer):
    if trainer.last_checkpoint is None:
        return "no checkpoint had been saved before it"
    path, iteration = trainer.last_checkpoint
    return f"the last good checkpoint is {path} (iteration {iteration})"


def train(trainer):
    """Run to --max_iter. Returns the exit code; Ctrl-C saves a checkpoint first (130)."""
    progress = ProgressBar(trainer.iteration, trainer.args.max_iter)
    try:
        trainer.run(progress)
    except KeyboardInterrupt:
        progress.close()
        try:
            trainer.save_checkpoint()
            trainer.save_loss_curve()
        except OSError as err:
            raise UserError(f"interrupted after iteration {trainer.iteration}, but "
                            f"{trainer.checkpoint_path} could not be written "
                            f"({err.strerror or err}); "
                            f"{describe_last_checkpoint(trainer)}") from None
        print(f"interrupted after iteration {trainer.iteration}: saved {trainer.checkpoint_path}; "
              f"continue with --resume {trainer.checkpoint_path}", file=sys.stderr)
        return 130
    except Diverged as err:
        progress.close()
        raise UserError(f"{err}; stopped, {describe_last_checkpoint(trainer)} "
                        "(a smaller --lr may help)") from None
    except OSError as err:  # a full disk, a folder made read-only: the outputs cannot be written
        progress.close()
        detail = err.strerror or err
        where = f" ({err.filename})" if err.filename else ""
        raise UserError(f"cannot write the outputs of iteration {trainer.iteration}{where}: "
                        f"{detail}; stopped, {describe_last_checkpoint(trainer)}") from None
    finally:
        trainer.content_loader.close()
        trainer.style_loader.close()
    progress.close()
    print(f"done: {trainer.iteration} iterations; decoder in {trainer.args.save_dir}, "
          f"losses in {trainer.log.path}", file=sys.stderr)
    return 0


def main(argv=None):
    args = parse_args(argv)
    apply_conv_flag(args)
    if args.dist != "none":  # data-parallel over mpiexec/srun ranks (adain_np/dist.py)
        from adain_np.dist import train_distributed
        return train_distributed(args)
    try:
        trainer = build_trainer(args)
        return train(trainer)
    except MemoryError:  # numpy's error names no flag; this line does
        raise UserError(f"out of memory (--batch_size {args.batch_size}, --image_size"
                        f" {args.image_size}, --crop_size {args.crop_size}); try smaller"
                        " values") from None


if __name__ == "__main__":
    sys.exit(run_cli(main))
