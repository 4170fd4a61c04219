"""python -m adain_np.train: train.py's flags, resume equivalence, Ctrl-C, bad input, outputs.

Runs use tiny images (24 px resized, 16 px crops, batch 2) so each iteration is cheap.
The loss logs are compared exactly: a resumed run does the same float operations on
the same data in the same order as an uninterrupted one.
"""
import csv
import errno
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
from PIL import Image

from adain_np import checkpoint, train
from adain_np.backend import NumpyBackend
from adain_np.checkpoint import load_checkpoint
from adain_np.cli import UserError, run_cli
from adain_np.net import Net
from adain_np.params import DECODER_SHAPES, init_vgg_params

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_COLUMNS = ("iteration", "lr", "loss_content", "loss_style", "loss")  # not 'seconds'


def write_images(folder, count, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (20 + 3 * i, 30, 3), dtype=np.uint8)  # (H, W, 3)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_images(root / "content", 3, 0), write_images(root / "style", 3, 1)


def tiny_args(data, out, max_iter, interval=100, extra=()):
    content, style = data
    return ["--content_dir", str(content), "--style_dir", str(style), "--image_size", "24",
            "--crop_size", "16", "--batch_size", "2", "--n_threads", "2", "--device", "cpu",
            "--save_dir", str(out / "exp"), "--log_dir", str(out / "logs"), "--lr", "1e-3",
            "--max_iter", str(max_iter), "--save_model_interval", str(interval), *extra]


def loss_rows(out):
    with open(out / "logs" / "losses.csv", newline="") as file:
        return [tuple(row[c] for c in LOSS_COLUMNS) for row in csv.DictReader(file)]


def run_subprocess(args, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([PYTHON, "-m", "adain_np.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(autouse=True)
def no_published_vgg(tmp_path, monkeypatch):
    """Run from an empty folder, so the default models/vgg_normalised.pth is absent."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    """4 uninterrupted iterations, saved at 2 and 4: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    assert train.main(tiny_args(data, out, 4, interval=2)) == 0
    return out


# ---------------------------------------------------------------- flags and defaults

def test_flags_default_to_train_py(data):
    args = train.parse_args(["--content_dir", str(data[0]), "--style_dir", str(data[1])])
    # pytorch-AdaIN train.py's defaults, written out
    assert (args.vgg, args.save_dir, args.log_dir) == (None, "./experiments", "./logs")
    assert (args.lr, args.lr_decay, args.max_iter, args.batch_size) == (1e-4, 5e-5, 160000, 8)
    assert (args.style_weight, args.content_weight, args.n_threads) == (10.0, 1.0, 16)
    assert args.save_model_interval == 10000
    assert (args.image_size, args.crop_size, args.device) == (512, 256, "auto")
    assert not args.bundled


def test_bundled_samples_are_the_default():
    args = train.parse_args([])
    assert args.bundled
    assert os.listdir(args.content_dir) and os.listdir(args.style_dir)
    for name, value in train.SAMPLE_DEFAULTS.items():
        assert getattr(args, name) == value
    assert train.parse_args(["--max_iter", "3"]).max_iter == 3  # flags still win


# ---------------------------------------------------------------- outputs

def test_outputs_of_a_run(straight_run):
    exp, logs = straight_run / "exp", straight_run / "logs"
    rows = loss_rows(straight_run)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    lrs = [float(r[1]) for r in rows]
    assert lrs == [1e-3 / (1 + 5e-5 * i) for i in range(4)]  # set before each step, i from 0
    for row in rows:
        content, style, total = (float(x) for x in row[2:])
        assert np.isfinite(total) and total == content + style
    for i in (2, 4):
        for name in (f"decoder_iter_{i}.npz", f"decoder_iter_{i}.pth.tar", f"samples_iter_{i}.png"):
            assert (exp / name).stat().st_size > 0, name
    assert (logs / "loss_curve.png").stat().st_size > 0
    with Image.open(exp / "samples_iter_4.png") as grid:
        assert grid.size[0] > 200 and grid.size[1] > 200
    assert load_checkpoint(exp / "checkpoint.npz").iteration == 4
    totals = [float(r[4]) for r in rows]
    assert totals[-1] < 0.5 * totals[0], f"the loss does not fall: {totals}"


def test_pth_export_loads_in_torch_like_test_py(straight_run):
    """test.py does decoder.load_state_dict(torch.load(args.decoder))."""
    exp = straight_run / "exp"
    state_dict = torch.load(exp / "decoder_iter_4.pth.tar", weights_only=True)
    assert list(state_dict) == list(DECODER_SHAPES)
    with np.load(exp / "decoder_iter_4.npz", allow_pickle=False) as npz:
        final = load_checkpoint(exp / "checkpoint.npz").decoder
        for key in DECODER_SHAPES:
            assert state_dict[key].dtype == torch.float32
            np.testing.assert_array_equal(state_dict[key].numpy(), npz[key])
            np.testing.assert_array_equal(npz[key], final[key])
    with np.load(exp / "decoder_iter_2.npz") as early, np.load(exp / "decoder_iter_4.npz") as late:
        assert not np.array_equal(early["1.weight"], late["1.weight"])  # it did train


# ---------------------------------------------------------------- resume and Ctrl-C

def test_resume_gives_the_same_losses(data, straight_run, tmp_path):
    assert train.main(tiny_args(data, tmp_path, 2, interval=100)) == 0  # saves at the end (2)
    resume = ["--resume", str(tmp_path / "exp" / "checkpoint.npz")]
    assert train.main(tiny_args(data, tmp_path, 4, interval=100, extra=resume)) == 0
    assert loss_rows(tmp_path) == loss_rows(straight_run)
    ours = load_checkpoint(tmp_path / "exp" / "checkpoint.npz")
    reference = load_checkpoint(straight_run / "exp" / "checkpoint.npz")
    assert (ours.iteration, ours.adam_step) == (reference.iteration, reference.adam_step) == (4, 4)
    for key in DECODER_SHAPES:
        np.testing.assert_array_equal(ours.decoder[key], reference.decoder[key])
        np.testing.assert_array_equal(ours.adam_v[key], reference.adam_v[key])


def test_injected_ctrl_c_saves_a_checkpoint_and_resume_matches(data, straight_run, tmp_path,
                                                              monkeypatch, capsys):
    calls = {"n": 0}
    real_backward = Net.backward

    def interrupted_backward(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C in the middle of iteration 2
            raise KeyboardInterrupt
        return real_backward(self, *args)

    monkeypatch.setattr(Net, "backward", interrupted_backward)
    assert run_cli(train.main, tiny_args(data, tmp_path, 4)) == 130
    assert "interrupted after iteration 1" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "exp" / "checkpoint.npz")
    assert (saved.iteration, saved.adam_step) == (1, 1)
    assert len(loss_rows(tmp_path)) == 1

    monkeypatch.setattr(Net, "backward", real_backward)
    resume = ["--resume", str(tmp_path / "exp" / "checkpoint.npz")]
    assert train.main(tiny_args(data, tmp_path, 4, extra=resume)) == 0
    assert loss_rows(tmp_path) == loss_rows(straight_run)


def test_sigint_to_the_process_saves_a_checkpoint(data, straight_run, tmp_path):
    args = tiny_args(data, tmp_path, 10_000)
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen([PYTHON, "-m", "adain_np.train", *args], cwd=tmp_path, env=env,
                               stderr=subprocess.PIPE, text=True)
    log = tmp_path / "logs" / "losses.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 3:  # header + 2 iterations
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    saved = load_checkpoint(tmp_path / "exp" / "checkpoint.npz")
    rows = loss_rows(tmp_path)
    assert saved.iteration == len(rows) >= 2
    assert f"interrupted after iteration {saved.iteration}" in stderr
    assert "Traceback" not in stderr

    # One more iteration from there equals an uninterrupted run of the same length (the
    # losses do not depend on --max_iter or on when outputs are saved, so the 4-iteration
    # reference run serves when it is long enough).
    total = saved.iteration + 1
    resume = ["--resume", str(tmp_path / "exp" / "checkpoint.npz")]
    assert train.main(tiny_args(data, tmp_path, total, extra=resume)) == 0
    if total <= 4:
        expected = loss_rows(straight_run)[:total]
    else:
        assert train.main(tiny_args(data, tmp_path / "straight", total)) == 0
        expected = loss_rows(tmp_path / "straight")
    assert loss_rows(tmp_path) == expected


def test_deferred_interrupts_hold_ctrl_c_until_the_step_is_done():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with train.deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            steps.append("finished")  # still running: the signal is held
    assert steps == ["finished"]


# ---------------------------------------------------------------- bad input

def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def test_bad_folders_exit_2_with_one_line(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = tiny_args(data, tmp_path, 2)
    missing = one_line_error(run_subprocess(
        args + ["--content_dir", str(tmp_path / "nope")], tmp_path))
    assert "image folder not found" in missing and "nope" in missing
    assert "no images in" in one_line_error(run_subprocess(args + ["--style_dir", str(empty)],
                                                           tmp_path))
    assert not (tmp_path / "exp").exists()  # nothing was started


@pytest.mark.parametrize("extra, expected", [
    (["--max_iter", "0"], "--max_iter must be at least 1"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--save_model_interval", "0"], "--save_model_interval must be at least 1"),
    (["--crop_size", "8"], "--crop_size must be at least 9"),
    (["--crop_size", "32"], "--image_size 24 is smaller than --crop_size 32"),
    (["--vgg", "models/missing.pth"], "--vgg models/missing.pth: no such file"),
    (["--device", "gpu"], "--device gpu is not usable"),
])
def test_bad_flags_exit_2(data, tmp_path, capsys, extra, expected, monkeypatch):
    monkeypatch.setitem(sys.modules, "adain_np.cuda", types.ModuleType("no_kernels"))
    assert run_cli(train.main, tiny_args(data, tmp_path, 2) + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1], err


def test_only_one_folder_given(data, capsys):
    assert run_cli(train.main, ["--content_dir", str(data[0])]) == 2
    assert "give both --content_dir and --style_dir" in capsys.readouterr().err


def test_batch_larger_than_the_folder_samples_with_replacement(data, tmp_path, capsys):
    args = tiny_args(data, tmp_path, 1)
    args[args.index("--batch_size") + 1] = "4"  # 3 images in each folder
    assert run_cli(train.main, args) == 0
    assert "sampling with replacement" in capsys.readouterr().err
    assert len(loss_rows(tmp_path)) == 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_forward = Net.forward

    def forward(self, *args):
        calls["n"] += 1
        loss_c, loss_s = real_forward(self, *args)
        return (float("nan"), loss_s) if calls["n"] == 3 else (loss_c, loss_s)

    monkeypatch.setattr(Net, "forward", forward)
    assert run_cli(train.main, tiny_args(data, tmp_path, 6, interval=2)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the loss became nan at iteration 3" in err
    path = tmp_path / "exp" / "checkpoint.npz"
    assert f"last good checkpoint is {path} (iteration 2)" in err
    assert load_checkpoint(path).iteration == 2
    assert len(loss_rows(tmp_path)) == 2


def test_huge_learning_rate_diverges_cleanly(data, tmp_path):
    # Adam moves every weight by ~lr per step: 1e30 overflows float32 within a few steps.
    error = one_line_error(run_subprocess(tiny_args(data, tmp_path, 5, extra=["--lr", "1e30"]),
                                          tmp_path))
    assert "NaN or infinite" in error or "the loss became" in error
    assert "no checkpoint had been saved" in error


def test_resume_with_another_architecture(data, tmp_path):
    path = tmp_path / "bad.npz"
    state = checkpoint.TrainingState(
        *[{k: np.zeros(s, np.float32) for k, s in DECODER_SHAPES.items()} for _ in range(3)],
        adam_step=1, iteration=1,
        meta={"content_loader": {"batches_consumed": 1}, "style_loader": {"batches_consumed": 1}})
    state.decoder["5.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    checkpoint.save_checkpoint(state, path)
    error = one_line_error(run_subprocess(tiny_args(data, tmp_path, 3, extra=["--resume", str(path)]),
                                          tmp_path))
    assert "does not match the decoder architecture" in error
    assert "'5.weight' has shape (256, 256, 1, 1), expected (256, 256, 3, 3)" in error


def test_full_disk_while_saving_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch, capsys):
    real_write = checkpoint._write_arrays
    saves = {"checkpoint": 0}

    def write(file, arrays):
        if "meta" in arrays:  # the training checkpoint, not a decoder_iter file
            saves["checkpoint"] += 1
            if saves["checkpoint"] == 2:
                file.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(file, arrays)

    monkeypatch.setattr(checkpoint, "_write_arrays", write)
    assert run_cli(train.main, tiny_args(data, tmp_path, 6, interval=2)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    path = tmp_path / "exp" / "checkpoint.npz"
    assert "No space left on device" in err and "iteration 4" in err
    assert f"last good checkpoint is {path} (iteration 2)" in err
    assert load_checkpoint(path).iteration == 2
    assert not [n for n in os.listdir(tmp_path / "exp") if n.endswith(".tmp")]


# ---------------------------------------------------------------- backend and encoder

def test_select_backend(monkeypatch, capsys):
    assert isinstance(train.backend_for_flag("cpu"), NumpyBackend)
    fake = types.ModuleType("fake_kernel_backend")

    def make_backend(kind):
        raise RuntimeError(f"no CUDA device for {kind}")

    fake.make_kernel_backend = make_backend
    monkeypatch.setitem(sys.modules, "adain_np.cuda", fake)
    assert isinstance(train.backend_for_flag("auto"), NumpyBackend)
    assert capsys.readouterr().err.strip() == (
        "note: no usable GPU (no CUDA device for gpu); training on the CPU with NumPy")
    with pytest.raises(UserError, match="--device emulator is not usable: no CUDA device for emulator"):
        train.backend_for_flag("emulator")
    fake.make_kernel_backend = lambda kind: ("backend", kind)
    assert train.backend_for_flag("auto") == ("backend", "gpu")
    assert train.backend_for_flag("emulator") == ("backend", "emulator")


def test_vgg_weights_given_explicitly_are_used(data, tmp_path, capsys):
    vgg = tmp_path / "vgg.npz"
    np.savez(vgg, **init_vgg_params(5))
    assert run_cli(train.main, tiny_args(data, tmp_path, 1, extra=["--vgg", str(vgg)])) == 0
    err = capsys.readouterr().err
    assert "random encoder" not in err
    meta = load_checkpoint(tmp_path / "exp" / "checkpoint.npz").meta
    assert meta["settings"]["encoder"] == str(vgg)


def test_bundled_default_run_without_vgg(tmp_path, capsys):
    args = ["--max_iter", "2", "--image_size", "24", "--crop_size", "16", "--batch_size", "2",
            "--n_threads", "2", "--device", "cpu"]
    assert run_cli(train.main, args) == 0
    err = capsys.readouterr().err
    assert "models/vgg_normalised.pth not found: using a seeded random encoder" in err
    assert (tmp_path / "experiments" / "samples_iter_2.png").exists()
    assert (tmp_path / "logs" / "loss_curve.png").exists()
    assert len(loss_rows(tmp_path)) == 2


class FakeStream:
    def __init__(self, tty):
        self.text, self.tty = "", tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar(tty):
    stream = FakeStream(tty)
    bar = train.ProgressBar(first=10, total=13, stream=stream, log_every_s=3600)
    for i in (11, 12, 13):
        bar.update(i, 0.5, 20.0, 1e-4)
    bar.close()
    text = stream.text
    assert "iter 13/13" in text and "it/s" in text
    assert "loss_c 0.5000" in text and "loss_s 20.0000" in text and "ETA 00:00" in text
    if tty:  # tqdm: one line redrawn in place (at most every 0.2 s), ended once
        assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    else:  # the first and the last iteration only (the next timed line is an hour away)
        assert "iter 11/13" in text and "\r" not in text
        assert "iter 12/13" not in text and text.count("\n") == 2
