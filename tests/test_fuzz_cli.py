"""The command lines against hostile inputs other than weight files: images, FIFOs,
resumed checkpoints, damaged loss logs, flags. Each gets one line and exit code 2 (or
works), within a memory limit where memory is the attack."""
import json
import os
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from fuzz_common import assert_cli_error, run_limited
from adain_np import checkpoint, images
from adain_np.checkpoint import CheckpointError, TrainingState, load_checkpoint, save_checkpoint
from adain_np.loss_log import COLUMNS, LossLog
from adain_np.params import DECODER_SHAPES, init_decoder_params


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    # A few KB on disk; over 2**28 pixels after resizing even at a shorter side of 32.
    Image.new("L", (1, 10_000_000)).save(folder / "tall.png")
    return folder


def stylize(tmp_path, *args, timeout=120):
    return run_limited([sys.executable, "-m", "adain_np.stylize", "--random_weights",
                        "--device", "cpu", "--output", str(tmp_path / "out"), *map(str, args)],
                       timeout=timeout, cwd=tmp_path)


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("role", ["content", "style"])
def test_image_huge_after_resize_is_refused_before_decoding(tmp_path, pictures, role):
    other = "style" if role == "content" else "content"
    tall = pictures / "tall.png"
    result = stylize(tmp_path, f"--{role}", tall, f"--{other}", pictures / "a.png")
    line = assert_cli_error(result)
    assert str(tall) in line and "1x10000000 " in line and "512x5120000000 " in line


def test_content_dir_batch_survives_a_huge_image(tmp_path, pictures):
    result = stylize(tmp_path, "--content_dir", pictures, "--style", pictures / "b.png",
                     "--content_size", "32", "--style_size", "32")
    assert "Traceback" not in result.stderr
    assert sum("tall.png" in line for line in result.stderr.splitlines()) == 1
    written = sorted(os.listdir(tmp_path / "out"))
    assert len(written) == 2 and not any("tall" in name for name in written), written


@pytest.mark.parametrize("role", ["content", "style"])
def test_fifo_image_is_refused_without_blocking(tmp_path, pictures, role):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    other = "style" if role == "content" else "content"
    result = stylize(tmp_path, f"--{role}", fifo, f"--{other}", pictures / "a.png", timeout=60)
    assert "not a regular file" in assert_cli_error(result)


@pytest.mark.parametrize("weights", ["1e308,1e308", "1e308,-1e308,1", "inf,1", "nan,1", "1,-1"])
def test_interpolation_weights_must_be_finite_and_sum_finitely(tmp_path, pictures, weights):
    styles = ",".join(str(pictures / n) for n in ("a.png", "b.png", "a.png")[:weights.count(",") + 1])
    result = stylize(tmp_path, "--content", pictures / "a.png", "--style", styles,
                     "--style_interpolation_weights", weights)
    assert "--style_interpolation_weights" in assert_cli_error(result)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_16_bit_images_scale_exactly_with_small_temporaries():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.array([round(v / 257) for v in range(65536)], dtype=np.uint8).reshape(256, 256)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    rgb = np.asarray(images.to_rgb(img))
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    big = Image.fromarray(np.full((1500, 2000), 40000, dtype=np.uint16))
    tracemalloc.start()
    rgb = images.to_rgb(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    pixels = 1500 * 2000
    assert np.asarray(rgb)[0, 0, 0] == round(40000 / 257)
    # The 16-bit copy (2 bytes a pixel), the 8-bit gray (1) and the RGB result (3) are
    # needed; one full-size float64 temporary alone would be 8.
    assert peak < 8 * pixels


def test_decompression_bomb_warning_is_one_line(tmp_path, pictures, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a.png has 1920 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own two-line warning must not escape
        images.load_image(pictures / "a.png")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "a.png" in lines[0]


# ---------------------------------------------------------------- resumed checkpoints

def state_with(meta, iteration=5):
    decoder = init_decoder_params(0)
    zeros = {k: np.zeros(s, np.float32) for k, s in DECODER_SHAPES.items()}
    return TrainingState(decoder, zeros, dict(zeros), adam_step=iteration, iteration=iteration,
                         meta=meta)


GOOD_LOADER = {"batches_consumed": 5, "seed": 0, "batch_size": 2, "num_images": 2}


@pytest.mark.parametrize("meta, why", [
    ({"content_loader": dict(GOOD_LOADER, batches_consumed=10**18)}, "batches_consumed"),
    ({"content_loader": dict(GOOD_LOADER, batches_consumed=-1)}, "batches_consumed"),
    ({"content_loader": dict(GOOD_LOADER, batches_consumed=2.5)}, "batches_consumed"),
    ({"content_loader": dict(GOOD_LOADER, num_images="many")}, "num_images"),
    ({"content_loader": dict(GOOD_LOADER, seed=1.5)}, "seed"),
    ({"content_loader": [1, 2]}, "not a mapping"),
    ({"seed": "x"}, "'seed'"),
    ({"seed": -3}, "'seed'"),
    ({"settings": [1]}, "'settings'"),
    ({"settings": {"lr": {"a": 1}}}, "setting 'lr'"),
])
def test_resume_metadata_is_validated(tmp_path, meta, why):
    path = tmp_path / "ck.npz"
    save_checkpoint(state_with(meta), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert why in message and str(path) in message and "\n" not in message


def test_deeply_nested_meta_json_is_one_line(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(state_with({}), path)
    arrays = checkpoint._read_npz(str(path))
    meta = json.loads(str(arrays["meta"]))
    text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    arrays["meta"] = np.array(text)
    checkpoint.write_npz(arrays, path)
    with pytest.raises(CheckpointError, match="'meta' is not JSON"):
        load_checkpoint(path)


def test_train_resume_with_a_huge_position_exits_2_at_once(tmp_path, pictures):
    path = tmp_path / "ck.npz"
    save_checkpoint(state_with({"content_loader": dict(GOOD_LOADER, batches_consumed=10**18),
                                "style_loader": GOOD_LOADER}), path)
    result = run_limited([sys.executable, "-m", "adain_np.train", "--content_dir", pictures,
                          "--style_dir", pictures, "--resume", path, "--max_iter", "9",
                          "--device", "cpu"], timeout=60, cwd=tmp_path)
    assert "batches_consumed" in assert_cli_error(result)


@pytest.mark.parametrize("flags", [["--image_size", "60000", "--crop_size", "256"],
                                   ["--image_size", "3000", "--crop_size", "3000"]])
def test_train_out_of_memory_is_one_line(tmp_path, pictures, flags):
    result = run_limited([sys.executable, "-m", "adain_np.train", "--content_dir", pictures,
                          "--style_dir", pictures, "--max_iter", "1", "--batch_size", "2",
                          "--n_threads", "0", "--device", "cpu", *flags], timeout=300,
                         cwd=tmp_path)
    # train notes the random stand-in encoder first; the error is the one last line
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]
    assert "--image_size" in lines[-1]


# ---------------------------------------------------------------- damaged loss logs

HEADER = ",".join(COLUMNS) + "\n"


def row(i):
    return f"{i},0.0001,1.5,2.5,26.5,0.25\n"


@pytest.mark.parametrize("damage", [
    "garbage,row\n", b"\xff\xfe not utf-8\n", "3,0.0001,1.5\n", "\0" * 64,
    "3,0.0001,1.5,2.5,26", "x" * 300 + "\n", "3,0.0001,abc,2.5,26.5,0.25\n",
])
def test_damaged_log_is_cleaned_on_resume_and_later_saves_work(tmp_path, damage, capsys):
    path = tmp_path / "losses.csv"
    tail = damage.encode() if isinstance(damage, str) else damage
    path.write_bytes((HEADER + row(1) + row(2)).encode() + tail)
    log = LossLog(str(path))
    log.start(resume_iteration=2)
    assert "damaged" in capsys.readouterr().err
    log.append(iteration=3, lr=1e-4, loss_content=1.0, loss_style=2.0, loss=21.0, seconds=0.5)
    rows = log.read()
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert path.read_text() == HEADER + row(1) + row(2) + "3,0.0001,1.0,2.0,21.0,0.5\n"


def test_resuming_from_an_older_checkpoint_keeps_the_newer_rows(tmp_path, capsys):
    path = tmp_path / "losses.csv"
    path.write_text(HEADER + "".join(row(i) for i in range(1, 7)))
    LossLog(str(path)).start(resume_iteration=2)
    assert path.read_text() == HEADER + row(1) + row(2)
    side = tmp_path / "losses.1.csv"
    assert side.read_text() == HEADER + "".join(row(i) for i in range(3, 7))
    assert "losses.1.csv" in capsys.readouterr().err
