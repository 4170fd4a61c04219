"""Every lesson in lessons/ runs with --quick, passes its own checks and writes its figures.

Each lesson is run as a learner runs it (``python lessons/NN_name.py --quick --out DIR``)
in a subprocess. A lesson ends with "check: ..." lines and a "result: ..." line and
exits 1 when one of its checks fails, so the exit code and that line carry its verdict.
"""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS_DIR = os.path.join(REPO, "lessons")

# The figures each lesson writes with --quick. Written out here (not read from the
# lessons) so that a lesson that stops drawing one fails.
EXPECTED_FILES = {
    "01_tensors_and_padding.py": ["01_padding.png", "01_border_blur.png"],
    "02_convolution_three_ways.py": ["02_im2col.png", "02_timings.png"],
    "03_pool_upsample_shapes.py": ["03_pool_windows.png", "03_shapes.png"],
    "04_instance_stats_and_adain.py": ["04_channel_stats.png", "04_alpha_stats.png",
                                       "04_pixel_adain.png"],
    "05_backprop_by_hand.py": ["05_gradcheck_h.png"],
    "06_net_forward_backward.py": ["06_forward.png", "06_decoder_grads.png"],
    "07_training.py": ["07_training.png", "07_training/logs/losses.csv",
                       "07_training/logs/loss_curve.png",
                       "07_training/experiments/decoder_iter_3.npz",
                       "07_training/experiments/decoder_iter_3.pth.tar",
                       "07_training/experiments/samples_iter_3.png"],
    "08_cuda_instance_stats.py": ["08_butterfly.png", "08_block_partials.png"],
    "09_fast_conv_kernel.py": ["09_reuse.png", "09_benchmark.png"],
    "10_paper_controls.py": ["10_controls_pixels.png", "10_controls_network.png"],
}

# --quick must finish in a few seconds; this limit only stops a hung lesson (the machine
# running the tests may be slow or busy).
TIMEOUT_S = 120

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lesson_files():
    return sorted(name for name in os.listdir(LESSONS_DIR) if re.fullmatch(r"\d\d_\w+\.py", name))


def run_lesson(name, *args):
    return subprocess.run([sys.executable, os.path.join(LESSONS_DIR, name), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_every_lesson_is_listed_here_and_in_the_readme():
    files = lesson_files()
    assert files == sorted(EXPECTED_FILES), "lessons/ and EXPECTED_FILES disagree"
    with open(os.path.join(LESSONS_DIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    listed = sorted(set(re.findall(r"`(\d\d_\w+\.py)`", readme)))
    assert listed == files, "lessons/README.md does not list exactly the lesson files"
    for name, figures in EXPECTED_FILES.items():
        for figure in figures:
            if "/" not in figure:
                assert figure in readme, f"README does not mention {figure} of {name}"


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_lesson_runs_quick_and_passes_its_checks(name, tmp_path):
    out = tmp_path / "out"
    proc = run_lesson(name, "--quick", "--out", str(out))
    report = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{report}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    checks = [line for line in lines if line.startswith("check: ")]
    assert checks, f"{name} printed no check line\n{report}"
    assert all(line.endswith(" ok") for line in checks), report
    assert re.fullmatch(rf"result: all {len(checks)} checks passed \(\d+\.\d s\)", lines[-1]), report
    for figure in EXPECTED_FILES[name]:
        path = out / figure
        assert path.is_file() and path.stat().st_size > 0, f"{name} did not write {figure}\n{report}"
        if figure.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{figure} is not a PNG"
    # Nothing but the figures is left behind: no temporary files of the atomic writes.
    leftovers = [p.name for p in out.rglob("*.tmp")]
    assert not leftovers, f"{name} left temporary files {leftovers}"


def test_a_bad_output_folder_is_a_one_line_error(tmp_path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("keep me")
    proc = run_lesson("01_tensors_and_padding.py", "--quick", "--out", str(not_a_folder))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a folder" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not_a_folder.read_text() == "keep me"


def test_an_unknown_flag_is_a_one_line_error():
    proc = run_lesson("01_tensors_and_padding.py", "--quick", "--no-such-flag")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--no-such-flag" in proc.stderr, proc.stderr
