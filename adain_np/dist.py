"""Data-parallel training: ``mpiexec -n K python -m adain_np.train --dist mpi ...``.

Every rank holds the whole decoder and Adam state. ``--batch_size`` stays the global
batch: the single-process data order (dataset.BatchLoader) is split across ranks, rank r
loading images [r*L, (r+1)*L) of every batch (L = batch_size / K). Each rank's loss is the
mean over its L images, so the mean of the K rank gradients is the single-process batch
gradient, up to the order of the float32 sums. One allreduce per step over one flat
float32 buffer carries the gradients, the two loss scalars and a stop flag (Ctrl-C or
SIGTERM on any rank stops every rank after the same iteration). Adam then runs
identically on every rank; every ``--dist_check_every`` iterations a checksum of the
parameters is compared across ranks. Only rank 0 writes files or prints progress.

Collectives are nonblocking and polled with a deadline (``--dist_timeout``), so a rank
that died or hangs makes the others stop with a message instead of waiting forever.
``--dist nccl`` does the gradient allreduce with NCCL (cupy.cuda.nccl, one GPU per rank,
its unique id sent over MPI); MPI still carries the small control messages.
mpi4py is imported only when --dist is given (the ``dist`` extra).
"""
import os
import socket
import sys
import time
import traceback

import numpy as np

from adain_np.cli import UserError

DIST_CHOICES = ("none", "mpi", "nccl")
DEFAULT_TIMEOUT_S = 600.0   # must exceed rank 0's longest save (checkpoint + sample grid)
DEFAULT_CHECK_EVERY = 100
POLL_S = 0.0005
ALLREDUCE_LOG_NAME = "allreduce.csv"
MISSING_MPI = ("--dist needs mpi4py and an MPI runtime: pip install 'adain_np[dist]' "
               "(mpi4py and mpich)")


def add_dist_flags(parser):
    parser.add_argument("--dist", choices=DIST_CHOICES, default="none",
                        help="data-parallel over ranks started by mpiexec/srun: mpi (CPU or "
                             "GPU, host allreduce) or nccl (one GPU per rank) (default none)")
    parser.add_argument("--dist_check_every", type=int, default=DEFAULT_CHECK_EVERY,
                        help="compare a parameter checksum across ranks this often (default %(default)s)")
    parser.add_argument("--dist_timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds a collective may wait for the other ranks before the run "
                             "stops (default %(default)s; longer than a save)")


def check_dist_args(args):
    if args.dist_check_every < 1:
        raise UserError(f"--dist_check_every must be at least 1, got {args.dist_check_every}")
    if not (np.isfinite(args.dist_timeout) and args.dist_timeout > 0):
        raise UserError(f"--dist_timeout must be a positive number of seconds, got {args.dist_timeout}")
    if args.dist == "nccl" and args.device not in ("auto", "gpu"):
        raise UserError(f"--dist nccl needs --device gpu (got --device {args.device}); "
                        "use --dist mpi on the CPU")


def per_rank_batch(batch_size, world_size):
    if batch_size % world_size:
        raise UserError(f"--batch_size {batch_size} does not split over {world_size} ranks: "
                        f"give a multiple of {world_size} (it is the global batch)")
    return batch_size // world_size


def import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(MISSING_MPI) from None
    return MPI


class PeerLost(Exception):
    """A collective did not complete in time: another rank died or is stuck."""


class Cluster:
    """The ranks of one run over MPI: rank, size, polled collectives, abort."""

    def __init__(self, MPI, timeout_s):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout_s = timeout_s
        self.stop_requested = False

    def others(self):
        names = [str(r) for r in range(self.size) if r != self.rank]
        return f"rank {names[0]}" if len(names) == 1 else f"one of ranks {', '.join(names)}"

    def wait(self, request, what):
        deadline = time.monotonic() + self.timeout_s
        try:
            while not request.Test():
                if time.monotonic() > deadline:
                    raise PeerLost(f"rank {self.rank}: {what} got no answer within "
                                   f"{self.timeout_s:g} s: {self.others()} died or is stuck")
                time.sleep(POLL_S)
        except self.MPI.Exception as err:
            raise PeerLost(f"rank {self.rank}: MPI error in {what}: {err}") from None

    def allreduce_sum(self, flat, backend, what):
        """Sum of `flat` (float32, host or device) over the ranks, on the same side."""
        host = np.ascontiguousarray(backend.to_host(flat))  # (n,)
        total = np.empty_like(host)
        self.wait(self.comm.Iallreduce(host, total, op=self.MPI.SUM), what)
        return backend.asarray(total)

    def allgather(self, row, what):
        """(size, n) float64 table of every rank's `row`."""
        row = np.ascontiguousarray(row, dtype=np.float64)  # (n,)
        table = np.empty((self.size, row.size), dtype=np.float64)
        self.wait(self.comm.Iallgather(row, table), what)
        return table

    def abort(self, code):
        sys.stderr.flush()
        self.comm.Abort(code)


class NcclCluster(Cluster):
    """Gradient allreduce on the GPU with NCCL; MPI for the rest. One GPU per rank."""

    def __init__(self, MPI, timeout_s):
        super().__init__(MPI, timeout_s)
        try:
            import cupy
            from cupy.cuda import nccl
            local_rank = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
            cupy.cuda.Device(local_rank).use()
        except Exception as err:  # no CuPy, no NCCL library, no such GPU
            raise UserError(f"--dist nccl needs CuPy with NCCL and one GPU per rank: "
                            f"{type(err).__name__}: {err}") from None
        self.cupy, self.nccl = cupy, nccl
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def allreduce_sum(self, flat, backend, what):
        cupy, nccl = self.cupy, self.nccl
        flat = cupy.ascontiguousarray(flat, dtype=cupy.float32)  # (n,)
        total = cupy.empty_like(flat)
        cupy.cuda.get_current_stream().synchronize()  # the gradients are written
        self.nccl_comm.allReduce(flat.data.ptr, total.data.ptr, flat.size, nccl.NCCL_FLOAT32,
                                 nccl.NCCL_SUM, self.stream.ptr)
        done = self.stream.record()
        deadline = time.monotonic() + self.timeout_s
        while not done.done:
            if time.monotonic() > deadline:
                self.nccl_comm.abort()
                raise PeerLost(f"rank {self.rank}: NCCL {what} did not complete within "
                               f"{self.timeout_s:g} s: {self.others()} died or is stuck")
            time.sleep(POLL_S)
        return total


def connect(args):
    MPI = import_mpi()
    if args.dist == "nccl":
        return NcclCluster(MPI, args.dist_timeout)
    return Cluster(MPI, args.dist_timeout)


# ---------------------------------------------------------------- data and state

def sharded_loader_class():
    from adain_np.dataset import BatchLoader

    class ShardedBatchLoader(BatchLoader):
        """The single-process batches, of which this rank loads its slice of L images."""

        def __init__(self, dataset, batch_size, seed, n_threads=2, prefetch=2, rank=0, size=1):
            self.rank, self.size = rank, size
            super().__init__(dataset, batch_size, seed, n_threads, prefetch)

        def _jobs_for_next_batch(self):
            jobs = super()._jobs_for_next_batch()  # the whole batch: the sampler moves as in one process
            per_rank = self.batch_size // self.size
            return jobs[self.rank * per_rank:(self.rank + 1) * per_rank]

    return ShardedBatchLoader


def checksum(xp, arrays):
    """float64 (sum, sum of squares, position-weighted sum) per array: cheap, order-sensitive."""
    rows = []
    for a in arrays:
        flat = a.ravel().astype(xp.float64)  # (n,)
        weights = xp.arange(1, flat.size + 1, dtype=xp.float64) / flat.size
        rows += [flat.sum(), (flat * flat).sum(), (flat * weights).sum()]
    return np.array([float(v) for v in rows])


def differing_ranks(table):
    """Ranks whose row of the (size, n) table is not bit-equal to rank 0's."""
    return [r for r in range(1, table.shape[0]) if not np.array_equal(table[r], table[0])]


# ---------------------------------------------------------------- the trainer

class NullLog:
    path = os.devnull

    def append(self, **row):
        pass

    def read(self, note=False):
        return []


class NullProgress:
    def update(self, *args):
        pass

    def close(self):
        pass


def make_dist_trainer_class():
    from adain_np import train as single

    class DistTrainer(single.Trainer):
        """train.Trainer whose step averages the gradients of all ranks; rank 0 writes."""

        def __init__(self, *args, cluster, **kwargs):
            super().__init__(*args, **kwargs)
            self.cluster = cluster
            self.allreduce_log = None
            self.stopped_together = False  # a stop every rank took at the same iteration

        def train_step(self):
            args, i, cluster = self.args, self.iteration, self.cluster
            b = self.net.backend
            started = time.perf_counter()
            lr = single.learning_rate(args.lr, args.lr_decay, i)
            content_images = self.content_loader.next_batch()  # (L, 3, crop, crop)
            style_images = self.style_loader.next_batch()      # (L, 3, crop, crop)
            loss_c, loss_s = self.net.forward(content_images, style_images)
            grads = self.net.backward(args.content_weight, args.style_weight)
            keys = list(grads)
            scalars = b.asarray(np.array([loss_c, loss_s, float(cluster.stop_requested)],
                                         dtype=np.float32))  # (3,)
            flat = b.xp.concatenate([grads[k].ravel() for k in keys] + [scalars])  # (n + 3,)
            reduce_started = time.perf_counter()
            total = cluster.allreduce_sum(flat, b, f"the gradient allreduce of iteration {i + 1}")
            allreduce_s = time.perf_counter() - reduce_started
            total /= cluster.size
            offset = 0
            for k in keys:
                grads[k] = total[offset:offset + grads[k].size].reshape(grads[k].shape)
                offset += grads[k].size
            loss_c, loss_s, stop = (float(v) for v in b.to_host(total[offset:]))
            loss_content, loss_style = args.content_weight * loss_c, args.style_weight * loss_s
            loss = loss_content + loss_style
            if not np.isfinite(loss):
                self.stopped_together = True
                raise single.Diverged(f"the loss became {loss} at iteration {i + 1} "
                                      f"(loss_content {loss_content}, loss_style {loss_style})")
            if not single.all_finite(b.xp, grads.values()):
                self.stopped_together = True
                raise single.Diverged(f"a decoder gradient became NaN or infinite at iteration {i + 1}")
            self.optimizer.lr = lr
            self.optimizer.step(grads)
            self.iteration = i + 1
            self.log.append(iteration=i + 1, lr=lr, loss_content=loss_content,
                            loss_style=loss_style, loss=loss,
                            seconds=round(time.perf_counter() - started, 4))
            if self.allreduce_log is not None:
                with open(self.allreduce_log, "a") as file:
                    file.write(f"{i + 1},{cluster.size},{allreduce_s:.6f}\n")
            if self.iteration % args.dist_check_every == 0:
                self.check_replicas()
            if stop > 0:
                self.stopped_together = True
                raise KeyboardInterrupt
            return loss_content, loss_style, lr

        def check_replicas(self, with_state=False):
            xp = self.net.backend.xp
            arrays = list(self.net.decoder_params.values())
            if with_state:  # at the start: the encoder, Adam and the data position too
                arrays += list(self.net.vgg_params.values())
                arrays += list(self.optimizer.m.values()) + list(self.optimizer.v.values())
            row = np.concatenate([checksum(xp, arrays),
                                  [self.iteration, self.optimizer.step_count,
                                   self.content_loader.batches_consumed,
                                   self.style_loader.batches_consumed]])
            table = self.cluster.allgather(row, f"the parameter check of iteration {self.iteration}")
            bad = differing_ranks(table)
            if bad:
                self.stopped_together = True
                when = "start" if with_state else f"iteration {self.iteration}"
                raise UserError(f"the ranks are out of step at {when}: rank(s) "
                                f"{', '.join(map(str, bad))} hold different parameters than rank 0 "
                                "(same flags, --vgg and --resume file on every rank?)")

        def save_outputs(self):
            if self.cluster.rank == 0:
                super().save_outputs()

        def save_checkpoint(self):
            if self.cluster.rank == 0:
                super().save_checkpoint()

        def save_loss_curve(self):
            if self.cluster.rank == 0:
                super().save_loss_curve()

    return DistTrainer


def build_dist_trainer(args, cluster):
    """train.build_trainer for one rank: sharded loaders, and files only on rank 0."""
    from adain_np import train as single
    from adain_np.dataset import FlatFolderDataset
    from adain_np.net import Net
    from adain_np.optim import Adam

    per_rank = per_rank_batch(args.batch_size, cluster.size)
    decoder, state = single.start_state(args)
    vgg, encoder = single.load_encoder(args.vgg)
    settings = single.run_settings(args, encoder)
    if state is not None:
        single.warn_changed_settings(state.meta.get("settings", {}), settings)
    backend = single.backend_for_flag(args.device)
    net = Net(vgg, decoder, backend)
    optimizer = Adam(net.decoder_params, lr=args.lr, backend=backend)
    loader_class = sharded_loader_class()
    loaders = [loader_class(FlatFolderDataset(folder, args.image_size, args.crop_size),
                            args.batch_size, 2 * args.seed + offset, args.n_threads,
                            rank=cluster.rank, size=cluster.size)
               for offset, folder in enumerate((args.content_dir, args.style_dir))]
    log = NullLog()
    if cluster.rank == 0:
        log = single.LossLog(os.path.join(args.log_dir, single.LOSS_LOG_NAME))
        try:
            os.makedirs(args.save_dir, exist_ok=True)
            log.start(None if state is None else state.iteration)
        except OSError as err:
            for loader in loaders:
                loader.close()
            raise UserError(f"cannot write to {args.save_dir} or {args.log_dir}: "
                            f"{err.strerror or err}") from None
    meta = {"seed": args.seed, "settings": settings,
            "dist": {"world_size": cluster.size, "per_rank_batch": per_rank}}
    trainer_class = make_dist_trainer_class()
    if state is None:
        trainer = trainer_class(args, net, optimizer, loaders, log, meta, cluster=cluster)
    else:
        trainer = trainer_class(args, net, optimizer, loaders, log, meta, state.iteration,
                                (args.resume, state.iteration), cluster=cluster)
        single.restore(trainer, state)
        saved = state.meta.get("dist", {"world_size": 1, "per_rank_batch": args.batch_size})
        if cluster.rank == 0 and saved.get("world_size") != cluster.size:
            print(f"note: the checkpoint was written by {saved.get('world_size')} rank(s) of "
                  f"{saved.get('per_rank_batch')} images; now {cluster.size} rank(s) of {per_rank}: "
                  f"same global batch {args.batch_size} and data order, the per-rank split "
                  "changed (sums differ in float32 rounding only)", file=sys.stderr)
    if cluster.rank == 0:
        trainer.allreduce_log = os.path.join(args.log_dir, ALLREDUCE_LOG_NAME)
        if state is None or not os.path.exists(trainer.allreduce_log):
            with open(trainer.allreduce_log, "w") as file:
                file.write("iteration,world_size,allreduce_seconds\n")
    return trainer


class _RankStream:
    """Prefixes a non-root rank's stderr lines with its rank."""

    def __init__(self, stream, rank):
        self.stream, self.prefix, self.at_line_start = stream, f"rank {rank}: ", True

    def write(self, text):
        for part in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(self.prefix)
            self.stream.write(part)
            self.at_line_start = part.endswith("\n")
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False


def _install_stop_handlers(cluster):
    import signal

    def request_stop(signum, frame):
        cluster.stop_requested = True  # carried by the next allreduce: every rank stops together
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)


def train_distributed(args):
    """Run this rank; returns its exit code. Called by train.main for --dist mpi/nccl."""
    from adain_np import train as single
    check_dist_args(args)
    cluster = connect(args)
    real_stderr = sys.stderr
    if cluster.rank != 0:
        sys.stderr = _RankStream(real_stderr, cluster.rank)
    # Set-up: a failure on any rank stops every rank with exit 2, reported once.
    error, trainer = None, None
    try:
        if cluster.rank != 0:
            import contextlib
            import io
            with contextlib.redirect_stderr(io.StringIO()):  # rank 0 says the same notes
                trainer = build_dist_trainer(args, cluster)
        else:
            trainer = build_dist_trainer(args, cluster)
    except UserError as err:
        error = str(err)
    flags = cluster.allgather([0.0 if error is None else 1.0], "the start-up")
    if flags.any():
        if error is not None and (cluster.rank == 0 or flags[0, 0] == 0):
            print(f"error: {error}", file=sys.stderr)
        if trainer is not None:
            trainer.content_loader.close()
            trainer.style_loader.close()
        return 2
    where = cluster.comm.allgather(f"{socket.gethostname()}:{os.getpid()}")
    if cluster.rank == 0:
        per_rank = args.batch_size // cluster.size
        print(f"dist {args.dist}: {cluster.size} ranks x {per_rank} images = batch "
              f"{args.batch_size}; " + ", ".join(f"rank {r} {w}" for r, w in enumerate(where)),
              file=sys.stderr)
    _install_stop_handlers(cluster)
    try:
        trainer.check_replicas(with_state=True)
        if cluster.rank == 0:
            return single.train(trainer)
        try:
            trainer.run(NullProgress())
        except (KeyboardInterrupt, single.Diverged):
            return 130 if not isinstance(sys.exc_info()[1], single.Diverged) else 2
        finally:
            trainer.content_loader.close()
            trainer.style_loader.close()
        return 0
    except PeerLost as err:
        if cluster.rank == 0:
            try:
                trainer.save_checkpoint()  # the state of the last completed iteration is whole
                print(f"note: saved {trainer.checkpoint_path} (iteration {trainer.iteration})",
                      file=sys.stderr)
            except OSError:
                pass
        print(f"error: {err}", file=sys.stderr)
        cluster.abort(1)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if trainer.stopped_together:
            return 2
        cluster.abort(2)  # this rank alone: the others would wait for it
    except BaseException:
        traceback.print_exc()
        cluster.abort(1)


# ---------------------------------------------------------------- benchmark

def _bench_worker(shape, repeats):
    """One rank of the dist benchmark: median step and allreduce time at global batch shape[0]."""
    MPI = import_mpi()
    from adain_np.backend import NumpyBackend
    from adain_np.net import Net
    from adain_np.optim import Adam
    from adain_np.params import init_decoder_params, init_vgg_params
    cluster = Cluster(MPI, DEFAULT_TIMEOUT_S)
    per_rank = per_rank_batch(shape[0], cluster.size)
    backend = NumpyBackend()
    net = Net(init_vgg_params(0), init_decoder_params(0), backend)
    optimizer = Adam(net.decoder_params, backend=backend)
    rng = np.random.default_rng(cluster.rank)
    content = rng.random((per_rank,) + tuple(shape[1:]), dtype=np.float32)
    style = rng.random((per_rank,) + tuple(shape[1:]), dtype=np.float32)
    steps, reduces = [], []
    for _ in range(repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        net.forward(content, style)
        grads = net.backward()
        flat = np.concatenate([g.ravel() for g in grads.values()])
        reduce_started = time.perf_counter()
        total = cluster.allreduce_sum(flat, backend, "the benchmark allreduce") / cluster.size
        reduces.append(time.perf_counter() - reduce_started)
        offset = 0
        for k, g in grads.items():
            grads[k] = total[offset:offset + g.size].reshape(g.shape)
            offset += g.size
        optimizer.step(grads)
        steps.append(time.perf_counter() - started)
    if cluster.rank == 0:
        import json
        print(json.dumps({"ranks": cluster.size, "step_s": float(np.median(steps[1:])),
                          "allreduce_s": float(np.median(reduces[1:])),
                          "grad_mb": flat.nbytes / 1e6}), flush=True)


def bench_dist(shape=(8, 3, 256, 256), repeats=3, mpiexec=None):
    """`python -m adain_np.bench dist`: 1 rank with 2 BLAS threads against 2 ranks with 1 each."""
    import json
    import shutil
    import subprocess
    mpiexec = mpiexec or shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        raise UserError(MISSING_MPI)
    rows = []
    for ranks, threads in ((1, 2), (2, 1)):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "adain_np.dist", "--bench-worker",
               "x".join(map(str, shape)), str(repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise UserError(f"dist benchmark with {ranks} ranks failed: "
                            f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["blas_threads"] = threads
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'ranks':>5} {'BLAS threads':>12} {'step s':>8} {'allreduce ms':>12} (global batch "
          f"{'x'.join(map(str, shape))}, {rows[0]['grad_mb']:.1f} MB of gradients)")
    for row in rows:
        print(f"{row['ranks']:>5} {row['blas_threads']:>12} {row['step_s']:8.2f} "
              f"{1e3 * row['allreduce_s']:12.2f}")
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bench-worker"]:
        _bench_worker(tuple(int(s) for s in sys.argv[2].split("x")), int(sys.argv[3]))
