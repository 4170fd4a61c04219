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
                       "07_training/experiments/checkpoint.npz"],
    "08_cuda_instance_stats.py": ["08_butterfly.png", "08_block_partials.png"],
    "09_fast_conv_kernel.py": ["09_reuse.png", "09_benchmark.png"],
    "10_paper_controls.py": ["10_controls_pixels.png", "10_controls_network.png"],
    "11_winograd.py": ["11_error_growth.png"],
    "12_why_adain_works.py": ["12_why_adain_works.png"],
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


# ---------------------------------------------------------------------------- exercises

EXERCISE_LESSONS = [f"{n:02d}" for n in range(1, 11)]


def run_grader(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lessons.check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, **(env or {})})


def exercise_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("exercise ")]


def test_exercise_files_are_stubs_with_a_task_and_match_the_solutions():
    import ast
    for lesson in EXERCISE_LESSONS:
        (stub,) = [n for n in os.listdir(os.path.join(LESSONS_DIR, "exercises")) if n.startswith(lesson + "_")]
        assert os.path.isfile(os.path.join(LESSONS_DIR, stub)), f"{stub} is not named after its lesson"
        trees = {}
        for folder in ("exercises", "solutions"):
            with open(os.path.join(LESSONS_DIR, folder, stub), encoding="utf-8") as f:
                trees[folder] = ast.parse(f.read())
        public = {folder: {n.name: n for n in tree.body
                           if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
                  for folder, tree in trees.items()}
        assert sorted(public["exercises"]) == sorted(public["solutions"]), stub
        assert 2 <= len(public["exercises"]) <= 3, stub
        for name, node in public["exercises"].items():
            assert ast.get_docstring(node), f"{stub}: {name} has no docstring stating the task"
            body = node.body[1:]
            assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{stub}: {name} is not a stub"
            assert "NotImplementedError" in ast.unparse(body[0]), f"{stub}: {name}"
            assert ast.unparse(node.args) == ast.unparse(public["solutions"][name].args), f"{stub}: {name}"


def test_every_solution_passes_its_lessons_checks():
    proc = run_grader("all", "--solutions")
    report = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0, report
    lines = exercise_lines(proc.stdout)
    assert len(lines) >= 2 * len(EXERCISE_LESSONS), report
    assert all(re.search(r": max error \S+ \(tolerance \S+\) pass$", line) for line in lines), report
    assert {line.split()[1].split(".")[0] for line in lines} == set(EXERCISE_LESSONS), report
    assert proc.stdout.strip().endswith(f"exercises: {len(lines)} of {len(lines)} pass"), report


def test_every_stub_fails_cleanly_with_a_hint():
    proc = run_grader("all")
    report = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-2000:]}"
    assert proc.returncode == 1, report
    assert "Traceback" not in proc.stdout + proc.stderr, report
    lines = proc.stdout.splitlines()
    graded = [i for i, line in enumerate(lines) if line.startswith("exercise ")]
    assert len(graded) >= 2 * len(EXERCISE_LESSONS), report
    for i in graded:
        assert lines[i].endswith("not written yet (NotImplementedError) FAIL"), lines[i]
        assert lines[i + 1].startswith("  hint: "), lines[i]
    assert proc.stdout.strip().endswith(f"exercises: 0 of {len(graded)} pass"), report


def test_a_wrong_answer_fails_with_its_error_and_a_crash_is_reported(tmp_path):
    # The solutions with two planted mistakes: the biased variance (L instead of L - 1) in
    # the mean/std backward, and an exception in the pooling-ties backward.
    import shutil
    folder = tmp_path / "mine"
    shutil.copytree(os.path.join(LESSONS_DIR, "solutions"), folder)
    path = folder / "05_backprop_by_hand.py"
    text = path.read_text()
    assert "((L - 1) * std)" in text
    text = text.replace("((L - 1) * std)", "(L * std)")
    text = text.replace("    N, C, H, W = x.shape\n    Ho, Wo = dout.shape[2:]\n",
                        "    N, C, H, W = x.shape\n    Ho, Wo = dout.shape[2:]\n    x[0, 0, 0, 99] = 1\n")
    path.write_text(text)
    proc = run_grader("05", env={"ADAIN_NP_EXERCISES": str(folder)})
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 1, report
    lines = exercise_lines(proc.stdout)
    assert len(lines) == 3, report
    error = float(re.search(r"max error (\S+) ", lines[0]).group(1))
    assert lines[0].endswith("FAIL") and error > 1e-3, report
    assert lines[1].endswith("FAIL"), report  # the style backward reuses exercise 1's answer
    assert "raised IndexError" in lines[2] and lines[2].endswith("FAIL"), report
    assert "L - 1" in proc.stdout.split("\n", 3)[2], "the first failure's hint is missing"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_lesson_grades_its_own_exercises():
    proc = run_lesson("05_backprop_by_hand.py", "--exercises", "--solutions")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(exercise_lines(proc.stdout)) == 3 and "result:" not in proc.stdout
    proc = run_lesson("03_pool_upsample_shapes.py", "--exercises")
    assert proc.returncode == 1 and "exercise 03.1 maxpool_floor: not written yet" in proc.stdout


def test_the_grader_rejects_a_lesson_without_exercises_in_one_line():
    proc = run_grader("42")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "42" in proc.stderr, proc.stderr
