"""Data-parallel training (adain_np/dist.py) under `mpiexec -n 2` on the CPU, loopback only.

Tiny crops, the bundled images and the seeded random encoder keep each run short.
Skipped when mpi4py or mpiexec is missing (the `dist` extra installs both).
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

mpi4py = pytest.importorskip("mpi4py", reason="the dist extra (mpi4py, mpich) is not installed")
MPIEXEC = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
if not os.path.exists(MPIEXEC):
    pytest.skip("no mpiexec (the dist extra's mpich wheel ships one)", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Loopback only: fork the ranks (no ssh), hydra on lo, UCX over shared memory.
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", UCX_TLS="self,sm", PYTHONPATH=REPO)
MPI = [MPIEXEC, "-launcher", "fork", "-iface", "lo"]
FLAGS = ["--device", "cpu", "--crop_size", "32", "--image_size", "48", "--n_threads", "0"]
# 2 ranks x 2 against 1 process x 4. The only difference is the order of float32 sums
# (per-rank means, then their mean). Measured here: the first iteration's losses agree to
# 2e-7 relative (same data, same decoder); after that Adam, which divides each gradient by
# its own running RMS, turns rounding-level differences in near-zero gradient components
# into full-size steps of either sign, and the losses drift apart to ~1e-3 relative by
# iteration 5. Bounds: an Adam step moves a weight by at most about lr, so after n steps
# two runs differ by at most 2 * lr * n per weight.
FIRST_LOSS_RTOL = 1e-6
LOSS_RTOL = 5e-3
LR, ITERATIONS = 1e-4, 6
DECODER_ATOL = 2 * LR * ITERATIONS


def train(tmp, name, ranks, *extra, timeout=600):
    out = os.path.join(tmp, name)
    args = [sys.executable, "-m", "adain_np.train", *FLAGS, "--save_dir", f"{out}/exp",
            "--log_dir", f"{out}/logs", *extra]
    if ranks:
        args = MPI + ["-n", str(ranks)] + args + ["--dist", "mpi"]
    return subprocess.run(args, cwd=tmp, env=ENV, capture_output=True, text=True, timeout=timeout)


def losses(tmp, name):
    with open(os.path.join(tmp, name, "logs", "losses.csv")) as file:
        return np.array([[float(r["loss_content"]), float(r["loss_style"])]
                         for r in csv.DictReader(file)])  # (iterations, 2)


def decoder(tmp, name, iteration):
    with np.load(os.path.join(tmp, name, "exp", f"decoder_iter_{iteration}.npz")) as f:
        return {k: f[k] for k in f.files}


def test_two_ranks_equal_one_process_and_resume(tmp_path):
    tmp = str(tmp_path)
    one = train(tmp, "one", 0, "--batch_size", "4", "--max_iter", "6", "--save_model_interval", "6")
    assert one.returncode == 0, one.stderr
    two = train(tmp, "two", 2, "--batch_size", "4", "--max_iter", "6", "--save_model_interval", "6")
    assert two.returncode == 0, two.stderr
    np.testing.assert_allclose(losses(tmp, "two")[0], losses(tmp, "one")[0], rtol=FIRST_LOSS_RTOL)
    np.testing.assert_allclose(losses(tmp, "two"), losses(tmp, "one"), rtol=LOSS_RTOL)
    d1, d2 = decoder(tmp, "one", 6), decoder(tmp, "two", 6)
    for key in d1:
        np.testing.assert_allclose(d2[key], d1[key], rtol=0, atol=DECODER_ATOL, err_msg=key)
    # Only rank 0 writes: the same files as one process, plus the allreduce timings.
    files = lambda name: sorted(os.path.relpath(os.path.join(d, f), os.path.join(tmp, name))
                                for d, _, fs in os.walk(os.path.join(tmp, name)) for f in fs)
    assert files("two") == sorted(files("one") + ["logs/allreduce.csv"])
    assert sorted(os.listdir(tmp)) == ["one", "two"]
    assert "rank 1: iter" not in two.stderr and two.stderr.count("done:") == 1

    # Resume from iteration 3 with the same world size: bit-identical iteration 6.
    first = train(tmp, "half", 2, "--batch_size", "4", "--max_iter", "3", "--save_model_interval", "3")
    assert first.returncode == 0, first.stderr
    resumed = train(tmp, "half", 2, "--batch_size", "4", "--max_iter", "6", "--save_model_interval", "6",
                    "--resume", os.path.join(tmp, "half", "exp", "checkpoint.npz"))
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(losses(tmp, "half"), losses(tmp, "two"))
    d3 = decoder(tmp, "half", 6)
    for key in d2:
        np.testing.assert_array_equal(d3[key], d2[key], err_msg=key)


def test_resume_with_another_world_size_keeps_the_global_batch(tmp_path):
    tmp = str(tmp_path)
    one = train(tmp, "one", 0, "--batch_size", "4", "--max_iter", "6", "--save_model_interval", "6")
    assert one.returncode == 0, one.stderr
    # Iterations 1-3 in one process, 4-6 on two ranks of 2 images each.
    first = train(tmp, "mixed", 0, "--batch_size", "4", "--max_iter", "3", "--save_model_interval", "3")
    assert first.returncode == 0, first.stderr
    resumed = train(tmp, "mixed", 2, "--batch_size", "4", "--max_iter", "6", "--save_model_interval", "6",
                    "--resume", os.path.join(tmp, "mixed", "exp", "checkpoint.npz"))
    assert resumed.returncode == 0, resumed.stderr
    assert "per-rank split changed" in resumed.stderr and "now 2 rank(s) of 2" in resumed.stderr
    mixed, single = losses(tmp, "mixed"), losses(tmp, "one")
    assert mixed.shape == single.shape == (6, 2)
    np.testing.assert_array_equal(mixed[:3], single[:3])  # the same process up to the checkpoint
    np.testing.assert_allclose(mixed, single, rtol=LOSS_RTOL)
    d_mixed, d_one = decoder(tmp, "mixed", 6), decoder(tmp, "one", 6)
    for key in d_one:
        np.testing.assert_allclose(d_mixed[key], d_one[key], rtol=0, atol=DECODER_ATOL, err_msg=key)


def test_a_bad_image_on_one_rank_is_skipped_without_desynchronising(tmp_path):
    from adain_np.images import sample_dir
    tmp = str(tmp_path)
    content = tmp_path / "content"
    shutil.copytree(sample_dir("content"), content)
    (content / "aaa_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # sorts first: in the first batches
    proc = train(tmp, "bad", 2, "--content_dir", str(content), "--style_dir", sample_dir("style"),
                 "--batch_size", "4", "--max_iter", "4", "--save_model_interval", "4", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "skipping unreadable image" in proc.stderr and "aaa_broken.jpg" in proc.stderr
    assert len(losses(tmp, "bad")) == 4 and proc.stderr.count("done:") == 1


def test_batch_that_does_not_split_is_one_line_exit_2(tmp_path):
    proc = train(str(tmp_path), "odd", 2, "--batch_size", "3", "--max_iter", "2", timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error") or "rank 1: error" in l]
    assert lines == ["error: --batch_size 3 does not split over 2 ranks: give a multiple of 2 "
                     "(it is the global batch)"], proc.stderr
    assert not os.path.exists(tmp_path / "odd" / "exp")


def test_different_start_states_are_refused(tmp_path):
    """MPMD launch with a different --seed on rank 1: the start check names it."""
    base = [sys.executable, "-m", "adain_np.train", *FLAGS, "--dist", "mpi", "--batch_size", "2",
            "--max_iter", "2", "--save_dir", "exp", "--log_dir", "logs"]
    proc = subprocess.run(MPI + ["-n", "1"] + base + ["--seed", "0", ":", "-n", "1"] + base +
                          ["--seed", "1"], cwd=str(tmp_path), env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "rank(s) 1 hold different parameters than rank 0" in proc.stderr


def test_flag_checks_without_mpi():
    from adain_np import dist, train as single
    args = single.parse_args(["--dist", "nccl", "--device", "cpu"])
    with pytest.raises(dist.UserError, match="--dist nccl needs --device gpu"):
        dist.check_dist_args(args)
    args = single.parse_args(["--dist", "mpi", "--dist_timeout", "0"])
    with pytest.raises(dist.UserError, match="--dist_timeout"):
        dist.check_dist_args(args)
    with pytest.raises(dist.UserError, match="does not split over 3 ranks"):
        dist.per_rank_batch(8, 3)
    assert dist.per_rank_batch(8, 4) == 2
    table = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0000001]])
    assert dist.differing_ranks(table) == [2]
    assert dist.differing_ranks(table[:2]) == []


def test_killed_rank_stops_the_others(tmp_path):
    """SIGKILL on rank 1 mid-run: the run exits non-zero within 60 s; the checkpoint loads.

    -disable-auto-cleanup keeps the launcher from killing rank 0 itself, so rank 0's own
    watchdog (--dist_timeout) has to notice."""
    import re
    import signal
    import time
    from adain_np.checkpoint import load_checkpoint
    args = MPI + ["-disable-auto-cleanup", "-n", "2", sys.executable, "-m", "adain_np.train",
                  *FLAGS, "--dist", "mpi", "--dist_timeout", "40", "--batch_size", "2",
                  "--max_iter", "1000", "--save_model_interval", "2", "--save_dir", "exp",
                  "--log_dir", "logs"]
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(args, cwd=str(tmp_path), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            deadline = time.monotonic() + 300
            while not (tmp_path / "exp" / "checkpoint.npz").exists():
                assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.5)
            pid = int(re.search(r"rank 1 [^:,]+:(\d+)", err_path.read_text()).group(1))
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            code = proc.wait(timeout=60)
            assert time.monotonic() - killed < 60
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code != 0
    state = load_checkpoint(str(tmp_path / "exp" / "checkpoint.npz"))
    assert state.iteration >= 2


def test_ctrl_c_on_the_launcher_stops_every_rank_with_one_good_checkpoint(tmp_path):
    """SIGINT to mpiexec (what Ctrl-C sends): every rank stops after the same iteration, rank 0
    saves the checkpoint of that iteration, and the whole run ends within 60 s."""
    import signal
    import time
    from adain_np.checkpoint import load_checkpoint
    args = MPI + ["-n", "2", sys.executable, "-m", "adain_np.train", *FLAGS, "--dist", "mpi",
                  "--batch_size", "2", "--max_iter", "1000", "--save_model_interval", "1000",
                  "--save_dir", "exp", "--log_dir", "logs"]
    err_path = tmp_path / "stderr.txt"
    log = tmp_path / "logs" / "losses.csv"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(args, cwd=str(tmp_path), env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 300
            while not (log.exists() and len(log.read_text().splitlines()) >= 3):  # header + 2 rows
                assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            interrupted = time.monotonic()
            code = proc.wait(timeout=60)
            assert time.monotonic() - interrupted < 60
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = err_path.read_text()
    assert code != 0 and "Traceback" not in text, text
    state = load_checkpoint(str(tmp_path / "exp" / "checkpoint.npz"))
    rows = len(log.read_text().splitlines()) - 1
    assert state.iteration == rows >= 2, (state.iteration, rows, text)
    assert "continue with --resume" in text, text
