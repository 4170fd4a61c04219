"""adain_np.dataset: the flat-folder dataset, the infinite sampler and the threaded batch loader."""
import json
import time

import numpy as np
import pytest
from PIL import Image

from adain_np.cli import UserError
from adain_np.dataset import BatchLoader, FlatFolderDataset, InfiniteSampler
from adain_np.images import load_image, random_crop, resize_exact, to_tensor

IMAGE_SIZE, CROP_SIZE = 24, 16  # small, so the whole file runs in a few seconds


def make_folder(folder, count, seed=0):
    """`count` random-noise PNGs of varied sizes (and one grayscale) named img0.png, img1.png, ..."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = 20 + 3 * i, 30 + 5 * i
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
        img = Image.fromarray(pixels)
        if i == 1:
            img = img.convert("L")
        img.save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images", 5)


def make_dataset(folder):
    return FlatFolderDataset(folder, image_size=IMAGE_SIZE, crop_size=CROP_SIZE)


def take_batches(loader, count):
    return [loader.next_batch() for _ in range(count)]


# ---------------------------------------------------------------- FlatFolderDataset

def test_item_is_resize_then_random_crop_then_to_tensor(folder):
    dataset = make_dataset(folder)
    assert len(dataset) == 5
    item = dataset.__getitem__(3, np.random.default_rng(10))
    assert item.shape == (3, CROP_SIZE, CROP_SIZE) and item.dtype == np.float32
    assert 0.0 <= item.min() and item.max() <= 1.0
    # The same steps by hand (train.py: Resize((512, 512)), RandomCrop(256), ToTensor).
    img = resize_exact(load_image(folder / "img3.png"), (IMAGE_SIZE, IMAGE_SIZE))
    expected = to_tensor(random_crop(img, CROP_SIZE, np.random.default_rng(10)))
    np.testing.assert_array_equal(item, expected)
    # Without an rng the crop is seeded by the index: repeatable.
    np.testing.assert_array_equal(dataset[2], dataset[2])
    with pytest.raises(IndexError):
        dataset[5]


def test_grayscale_item_has_three_equal_channels(folder):
    item = make_dataset(folder)[1]  # img1 was saved as L
    np.testing.assert_array_equal(item[0], item[1])
    np.testing.assert_array_equal(item[0], item[2])


def test_missing_empty_and_bad_folders(tmp_path):
    with pytest.raises(UserError, match="not found"):
        FlatFolderDataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images"):
        FlatFolderDataset(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder"):
        FlatFolderDataset(tmp_path / "file.png")


def test_crop_larger_than_image_size(folder):
    with pytest.raises(UserError, match="crop size"):
        FlatFolderDataset(folder, image_size=16, crop_size=17)
    with pytest.raises(UserError):
        FlatFolderDataset(folder, image_size=0, crop_size=0)


def test_unreadable_file_is_skipped_with_one_warning(folder, capsys):
    (folder / "img2.png").write_bytes(b"garbage, not a png")
    dataset = make_dataset(folder)
    first = dataset.__getitem__(2, np.random.default_rng(11))
    again = dataset.__getitem__(2, np.random.default_rng(11))
    # The next readable image (img3) stands in for img2.
    np.testing.assert_array_equal(first, dataset.__getitem__(3, np.random.default_rng(11)))
    np.testing.assert_array_equal(first, again)
    err = capsys.readouterr().err
    assert err.count("img2.png") == 1 and "warning" in err


def test_all_unreadable_is_a_user_error(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ["a.png", "b.jpg"]:
        (folder / name).write_bytes(b"nope")
    dataset = FlatFolderDataset(folder, image_size=IMAGE_SIZE, crop_size=CROP_SIZE)
    with pytest.raises(UserError, match="could be read"):
        dataset[0]


# ---------------------------------------------------------------- InfiniteSampler

def test_sampler_covers_each_index_once_per_pass_and_reshuffles():
    sampler = InfiniteSampler(7, np.random.default_rng(12))
    drawn = sampler.take(7 * 6)
    passes = drawn.reshape(6, 7)
    for one_pass in passes:
        assert sorted(one_pass.tolist()) == list(range(7))
    assert len({tuple(p) for p in passes}) > 1  # not the same order every pass


def test_sampler_next_matches_take():
    a = InfiniteSampler(5, np.random.default_rng(13))
    b = InfiniteSampler(5, np.random.default_rng(13))
    assert [next(a) for _ in range(17)] == b.take(17).tolist()


def test_sampler_state_round_trip_through_json():
    sampler = InfiniteSampler(6, np.random.default_rng(14))
    sampler.take(10)
    saved = json.loads(json.dumps(sampler.state()))
    expected = sampler.take(25)
    resumed = InfiniteSampler(6, np.random.default_rng(999))  # another seed: the state must win
    resumed.set_state(saved)
    np.testing.assert_array_equal(resumed.take(25), expected)
    with pytest.raises(ValueError):
        InfiniteSampler(7, np.random.default_rng(0)).set_state(saved)


@pytest.mark.parametrize("start", [0, 3, 6])
@pytest.mark.parametrize("count", [0, 1, 3, 6, 7, 13, 20])
def test_sampler_skip_equals_take(start, count):
    taken = InfiniteSampler(6, np.random.default_rng(15))
    skipped = InfiniteSampler(6, np.random.default_rng(15))
    taken.take(start)
    skipped.take(start)
    taken.take(count)
    skipped.skip(count)
    np.testing.assert_array_equal(skipped.take(20), taken.take(20))


# ---------------------------------------------------------------- BatchLoader

def test_batches_do_not_depend_on_thread_count(folder):
    dataset = make_dataset(folder)
    results = []
    for threads in (0, 1, 4):
        with BatchLoader(dataset, batch_size=3, seed=16, n_threads=threads) as loader:
            results.append(take_batches(loader, 5))
    for batches in results[1:]:
        for got, expected in zip(batches, results[0]):
            np.testing.assert_array_equal(got, expected)
    assert results[0][0].shape == (3, 3, CROP_SIZE, CROP_SIZE)
    assert results[0][0].dtype == np.float32


def test_batches_follow_the_documented_recipe(folder):
    """Sample k = the k-th sampler index, cropped with default_rng([seed, k])."""
    dataset = make_dataset(folder)
    seed, batch_size = 17, 2
    with BatchLoader(dataset, batch_size, seed, n_threads=2) as loader:
        batches = take_batches(loader, 4)
    sampler = InfiniteSampler(len(dataset), np.random.default_rng(seed))
    for b, batch in enumerate(batches):
        for j in range(batch_size):
            k = b * batch_size + j
            expected = dataset.__getitem__(int(next(sampler)), np.random.default_rng([seed, k]))
            np.testing.assert_array_equal(batch[j], expected)


def test_different_seeds_give_different_batches(folder):
    dataset = make_dataset(folder)
    with BatchLoader(dataset, 2, seed=1, n_threads=1) as a, BatchLoader(dataset, 2, seed=2, n_threads=1) as b:
        assert not np.array_equal(a.next_batch(), b.next_batch())


def test_state_round_trip_resumes_the_same_batches(folder):
    dataset = make_dataset(folder)
    with BatchLoader(dataset, batch_size=2, seed=18, n_threads=2) as loader:
        take_batches(loader, 3)
        saved = json.loads(json.dumps(loader.state()))
        assert saved["batches_consumed"] == 3
        expected = take_batches(loader, 4)
    with BatchLoader(dataset, batch_size=2, seed=18, n_threads=3) as resumed:
        resumed.next_batch()  # a loader that has already run (and prefetched) ahead
        resumed.set_state(saved)
        got = take_batches(resumed, 4)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_resume_with_other_settings_warns(folder, capsys):
    dataset = make_dataset(folder)
    with BatchLoader(dataset, batch_size=2, seed=19, n_threads=1) as loader:
        loader.set_state({"batches_consumed": 2, "seed": 20, "batch_size": 2, "num_images": 5})
        assert loader.batches_consumed == 2
    assert "seed" in capsys.readouterr().err


def test_batch_larger_than_dataset_samples_with_replacement(tmp_path, capsys):
    dataset = make_dataset(make_folder(tmp_path / "few", 3))
    with BatchLoader(dataset, batch_size=8, seed=21, n_threads=2) as loader:
        batches = take_batches(loader, 2)
    assert batches[0].shape == (8, 3, CROP_SIZE, CROP_SIZE)
    err = capsys.readouterr().err
    assert err.count("with replacement") == 1
    assert len(err.strip().splitlines()) == 1


def test_unreadable_file_in_loader_warns_once(folder, capsys):
    (folder / "img0.png").write_bytes(b"broken")
    dataset = make_dataset(folder)
    with BatchLoader(dataset, batch_size=5, seed=22, n_threads=3) as loader:
        take_batches(loader, 3)  # every image is drawn in each batch of 5
    assert capsys.readouterr().err.count("img0.png") == 1


class SlowDataset:
    """Each item takes `delay` seconds (sleeping, so timing does not depend on CPU load)."""

    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 4

    def __getitem__(self, index, rng):
        time.sleep(self.delay)
        return np.full((3, 2, 2), index, dtype=np.float32)


@pytest.mark.parametrize("prefetch", [1, 2])
def test_prefetch_hides_loading_time(prefetch):
    delay = 0.1
    with BatchLoader(SlowDataset(delay), batch_size=2, seed=23, n_threads=4, prefetch=prefetch) as loader:
        loader.next_batch()
        for _ in range(2):
            time.sleep(4 * delay)  # a training step that is slower than loading a batch
            start = time.perf_counter()
            loader.next_batch()
            waited = time.perf_counter() - start
            # Without prefetching this would wait at least `delay`; prefetched, it is ready.
            assert waited < delay / 2, waited


def test_closed_loader_refuses(folder):
    loader = BatchLoader(make_dataset(folder), batch_size=2, seed=24, n_threads=2)
    loader.next_batch()
    loader.close()
    loader.close()  # twice is fine
    with pytest.raises(RuntimeError):
        loader.next_batch()


def test_bad_loader_arguments(folder):
    dataset = make_dataset(folder)
    with pytest.raises(UserError):
        BatchLoader(dataset, batch_size=0, seed=0)
    with pytest.raises(UserError):
        BatchLoader(dataset, batch_size=2, seed=-1)
