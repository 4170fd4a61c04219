"""The training data pipeline of pytorch-AdaIN's train.py, without torch.

train.py reads two flat folders (content, style) through ``FlatFolderDataset``,
with ``Resize((512, 512))`` (aspect ratio not kept), ``RandomCrop(256)`` and
``ToTensor``, and an infinite sampler that reshuffles on every pass. The same
is here, made deterministic: the batches are a pure function of the seed and
the batch number, whatever the number of loading threads, so a resumed run
needs only the number of batches already consumed.
"""
import collections
import copy
import operator
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from adain_np.cli import UserError
from adain_np.images import (
    IMAGE_EXTENSIONS, ImageError, list_images, load_image, random_crop, resize_exact, to_tensor,
)


class FlatFolderDataset:
    """The images directly inside `root`, each given as a (3, crop, crop) float32 array in [0, 1].

    Loading an item: RGB, ``resize_exact((image_size, image_size))``, a random
    (crop_size, crop_size) crop, ``to_tensor``. An unreadable file is reported once
    on stderr and the next readable image (by sorted name, wrapping round) takes
    its place, so one bad file does not stop a long training run.
    """

    def __init__(self, root, image_size=512, crop_size=256):
        for name, value in (("image size", image_size), ("crop size", crop_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if crop_size > image_size:
            raise UserError(f"crop size {crop_size} is larger than the image size {image_size}")
        self.root = str(root)
        self.image_size = int(image_size)
        self.crop_size = int(crop_size)
        try:
            self.paths, self.skipped = list_images(self.root)
        except FileNotFoundError:
            raise UserError(f"image folder not found: {self.root}") from None
        except NotADirectoryError:
            raise UserError(f"not a folder: {self.root}") from None
        except OSError as err:
            raise UserError(f"cannot list the folder {self.root}: {err.strerror or err}") from None
        if not self.paths:
            raise UserError(
                f"no images in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)}; "
                f"{len(self.skipped)} other entries there)")
        self._unreadable = set()  # indices of files that failed to load
        self._lock = threading.Lock()  # items load in several threads at once

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index, rng=None):
        """Item `index` as a (3, crop, crop) float32 array; `rng` picks the crop.

        Without `rng` the crop is seeded by the index, so ``dataset[i]`` is repeatable.
        """
        index = operator.index(index)
        count = len(self.paths)
        if not 0 <= index < count:
            raise IndexError(f"image index {index} out of range for {count} images")
        if rng is None:
            rng = np.random.default_rng(index)
        for step in range(count):
            candidate = (index + step) % count
            with self._lock:
                if candidate in self._unreadable:
                    continue
            try:
                img = load_image(self.paths[candidate])
            except ImageError as err:
                self._mark_unreadable(candidate, err)
                continue
            img = resize_exact(img, (self.image_size, self.image_size))
            img = random_crop(img, self.crop_size, rng)
            return to_tensor(img)  # (3, crop, crop)
        raise UserError(f"none of the {count} images in {self.root} could be read")

    def _mark_unreadable(self, index, err):
        with self._lock:
            first_time = index not in self._unreadable
            self._unreadable.add(index)
        if first_time:
            print(f"warning: skipping unreadable image: {err}", file=sys.stderr)


class InfiniteSampler:
    """Endless indices 0..n-1: a permutation from `rng`, a fresh one after every pass.

    Like pytorch-AdaIN's InfiniteSamplerWrapper, but the shuffles come from the
    given numpy Generator (train.py reseeds from the OS), and the position can be
    saved and restored with ``state`` / ``set_state``.
    """

    def __init__(self, n, rng):
        if n < 1:
            raise ValueError(f"sampler needs at least one item, got n={n}")
        self.n = int(n)
        self.rng = rng
        self._order = rng.permutation(self.n)  # (n,) the current pass
        self._position = 0  # next place in _order to hand out

    def __iter__(self):
        return self

    def __next__(self):
        return int(self.take(1)[0])

    def take(self, count):
        """The next `count` indices as an int64 array (count,)."""
        out = np.empty(count, dtype=np.int64)  # (count,)
        filled = 0
        while filled < count:
            if self._position == self.n:
                self._new_pass()
            step = min(count - filled, self.n - self._position)
            out[filled:filled + step] = self._order[self._position:self._position + step]
            filled += step
            self._position += step
        return out

    def skip(self, count):
        """Advance by `count` indices exactly as `take` would, without building them."""
        left_in_pass = self.n - self._position
        if count <= left_in_pass:
            self._position += count
            return
        full_passes, rest = divmod(count - left_in_pass, self.n)
        passes = full_passes + (1 if rest else 0)
        for _ in range(passes - 1):
            self.rng.permutation(self.n)  # drawn only to move the rng on as `take` would
        self._order = self.rng.permutation(self.n)
        self._position = rest if rest else self.n

    def _new_pass(self):
        self._order = self.rng.permutation(self.n)
        self._position = 0

    def state(self):
        """Plain values (JSON-able) that ``set_state`` restores."""
        return {
            "n": self.n,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "order": [int(i) for i in self._order],
            "position": self._position,
        }

    def set_state(self, state):
        if int(state["n"]) != self.n:
            raise ValueError(f"sampler state is for {state['n']} items, this sampler has {self.n}")
        order = np.asarray(state["order"], dtype=np.int64)  # (n,)
        if order.shape != (self.n,) or not 0 <= int(state["position"]) <= self.n:
            raise ValueError("sampler state is malformed (order or position out of range)")
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._order = order
        self._position = int(state["position"])


class BatchLoader:
    """Batches of (batch_size, 3, crop, crop) float32 from a dataset, decoded ahead in threads.

    Sample k (counting from the start of training) takes the k-th index of
    ``InfiniteSampler(n, np.random.default_rng(seed))`` and crops with
    ``np.random.default_rng([seed, k])``. So the batches depend only on the seed
    and their number, not on `n_threads` or timing. `prefetch` batches are kept
    decoding while the caller works on the current one. ``n_threads=0`` loads in
    the calling thread, with no prefetch.

    `dataset` needs ``len()`` and ``__getitem__(index, rng)`` (FlatFolderDataset).
    """

    def __init__(self, dataset, batch_size, seed, n_threads=2, prefetch=2):
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if n_threads < 0:
            raise UserError(f"number of loading threads must be >= 0, got {n_threads}")
        if seed < 0:
            raise UserError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.prefetch = max(int(prefetch), 0)
        if self.batch_size > len(dataset):
            where = getattr(dataset, "root", "the dataset")
            print(f"note: batch size {self.batch_size} is larger than the {len(dataset)} images in "
                  f"{where}: sampling with replacement (images repeat within a batch)",
                  file=sys.stderr)
        self._executor = ThreadPoolExecutor(n_threads, "batch-loader") if n_threads > 0 else None
        self._pending = collections.deque()  # per submitted batch: a list of futures
        self._closed = False
        self._restart(0)

    def _restart(self, batches_consumed):
        self._cancel_pending()
        self.sampler = InfiniteSampler(len(self.dataset), np.random.default_rng(self.seed))
        self.sampler.skip(batches_consumed * self.batch_size)
        self._consumed = batches_consumed
        self._drawn = batches_consumed  # batches whose indices have been taken from the sampler
        self._fill()

    def _jobs_for_next_batch(self):
        """(index, sample number) for each item of the next batch, in order."""
        first_sample = self._drawn * self.batch_size
        indices = self.sampler.take(self.batch_size)  # (batch_size,)
        self._drawn += 1
        return [(int(index), first_sample + b) for b, index in enumerate(indices)]

    def _load(self, index, sample_number):
        rng = np.random.default_rng([self.seed, sample_number])
        return self.dataset.__getitem__(index, rng)  # (3, crop, crop)

    def _fill(self, at_least=0):
        """Submit batches until `prefetch` (and at least `at_least`) are pending."""
        if self._executor is None:
            return
        while len(self._pending) < max(self.prefetch, at_least):
            jobs = self._jobs_for_next_batch()
            self._pending.append([self._executor.submit(self._load, *job) for job in jobs])

    def _cancel_pending(self):
        for futures in self._pending:
            for future in futures:
                future.cancel()
        self._pending.clear()

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()

    def next_batch(self):
        """The next batch, (batch_size, 3, crop, crop) float32."""
        if self._closed:
            raise RuntimeError("BatchLoader is closed")
        if self._executor is None:
            items = [self._load(*job) for job in self._jobs_for_next_batch()]
        else:
            self._fill(at_least=1)
            futures = self._pending.popleft()
            self._fill()  # keep `prefetch` batches decoding while this one is used
            items = [future.result() for future in futures]
        self._consumed += 1
        return np.stack(items)  # (B, 3, crop, crop)

    @property
    def batches_consumed(self):
        return self._consumed

    def state(self):
        """Plain values for a checkpoint; ``set_state`` resumes right after the last batch returned."""
        return {"batches_consumed": self._consumed, "seed": self.seed,
                "batch_size": self.batch_size, "num_images": len(self.dataset)}

    def set_state(self, state):
        """Resume after ``state['batches_consumed']`` batches.

        The seed, batch size and image count are this loader's own; if the state
        was saved with others, a one-line warning says the sequence will differ.
        """
        mine = self.state()
        for key in ("seed", "batch_size", "num_images"):
            if key in state and int(state[key]) != mine[key]:
                print(f"warning: resuming with {key.replace('_', ' ')} {mine[key]} "
                      f"(the checkpoint had {state[key]}): the batches will differ from the "
                      f"original run", file=sys.stderr)
        self._restart(int(state["batches_consumed"]))

    def close(self):
        """Stop the loading threads (pending loads are cancelled)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_pending()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
