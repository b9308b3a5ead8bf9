"""Dataset readers (real CIFAR files, a hand-written ImageNet16 file), NB201 splits, the on-device loader."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.datasets import DATASETS
from pipeline.train.data import Normalise, TrainBatches, load_splits
from pipeline.train.readers import DataError, read_cifar10, read_cifar100, read_imagenet16

# --- CIFAR-10 (real, lossless subset) ------------------------------------------------------------


def test_cifar10_reader_matches_known_pixels(cifar10_dir: Path) -> None:
    (tx, ty), (ex, ey) = read_cifar10(cifar10_dir)
    assert tx.shape == (4000, 3, 32, 32) and tx.dtype == torch.uint8 and ty.dtype == torch.int64
    assert ex.shape == (1000, 3, 32, 32)
    # README's independent checks: first image's red plane starts 59, 43, 50; labels start 6 9 9 4 ...
    assert tx[0, 0, 0, :3].tolist() == [59, 43, 50]
    assert tx[0, 2, 31, 29:].tolist() == [140, 84, 72]
    assert ty[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert ey[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert ex[0, 0, 0, :9].tolist() == [158, 159, 165, 166, 160, 156, 162, 159, 158]


def test_cifar10_dir_may_be_the_batches_folder(cifar10_dir: Path) -> None:
    a = read_cifar10(cifar10_dir)[1][1]
    b = read_cifar10(cifar10_dir / "cifar-10-batches-py")[1][1]
    assert torch.equal(a, b)


def test_cifar10_splits(cifar10_dir: Path) -> None:
    full = load_splits("cifar10", cifar10_dir)
    assert list(full.eval) == ["test"] and len(full.train_y) == 4000 and full.num_classes == 10
    info = DATASETS["cifar10"]
    assert (full.image_size, full.pad, full.mean, full.std) == (32, 4, info.mean, info.std)

    valid = load_splits("cifar10-valid", cifar10_dir)
    assert list(valid.eval) == ["valid", "test"]
    assert len(valid.train_y) == len(valid.eval["valid"][1]) == 2000
    # the two halves partition the training set: every image exactly once
    halves = torch.cat([valid.train_x, valid.eval["valid"][0]]).flatten(1)
    assert torch.equal(halves.sort(0).values, full.train_x.flatten(1).sort(0).values)
    again = load_splits("cifar10-valid", cifar10_dir)
    assert torch.equal(again.train_x, valid.train_x)  # deterministic


def test_subsets_are_fixed_and_capped(cifar10_dir: Path) -> None:
    a = load_splits("cifar10", cifar10_dir, max_train=300, max_eval=100)
    b = load_splits("cifar10", cifar10_dir, max_train=300, max_eval=100)
    assert len(a.train_y) == 300 and len(a.eval["test"][1]) == 100
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.eval["test"][0], b.eval["test"][0])
    assert not torch.equal(a.train_y, load_splits("cifar10", cifar10_dir).train_y[:300])  # a random subset


# --- CIFAR-100 (20-image real sample) ------------------------------------------------------------


def test_cifar100_reader_and_split(shared_dir: Path, tmp_path: Path) -> None:
    sample = shared_dir / "data" / "cifar100" / "cifar-100-python" / "test"
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    shutil.copy(sample, folder / "test")
    shutil.copy(sample, folder / "train")  # the sample has no train file; reuse the test rows
    (tx, _), (ex, ey) = read_cifar100(tmp_path)
    assert tx.shape == (20, 3, 32, 32) and ex.dtype == torch.uint8
    assert ey.tolist()[:10] == [49, 33, 72, 51, 71, 92, 15, 14, 23, 0]
    assert ex[:10, 0, 0, 0].tolist() == [199, 113, 61, 93, 80, 168, 37, 175, 233, 182]
    splits = load_splits("cifar100", tmp_path)
    assert splits.num_classes == 100 and list(splits.eval) == ["valid", "test"]
    valid, test = splits.eval["valid"][1], splits.eval["test"][1]
    assert len(valid) == len(test) == 10
    assert sorted(valid.tolist() + test.tolist()) == sorted(ey.tolist())


# --- ImageNet16-120 (file written here in NB201's format) ----------------------------------------


def _write_in16(folder: Path, rng: np.random.Generator, n_train: tuple[int, ...], n_val: int) -> None:
    folder.mkdir(parents=True)
    for i, n in enumerate(n_train, start=1):
        entry = {"data": rng.integers(0, 256, (n, 768), dtype=np.uint8), "labels": list(rng.integers(1, 1001, n))}
        (folder / f"train_data_batch_{i}").write_bytes(pickle.dumps(entry, protocol=2))
    labels = [1, 120, 121, 1000, *rng.integers(1, 121, n_val - 4).tolist()]
    entry = {"data": rng.integers(0, 256, (n_val, 768), dtype=np.uint8), "labels": labels}
    (folder / "val_data").write_bytes(pickle.dumps(entry, protocol=2))


def test_imagenet16_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_in16(tmp_path / "ImageNet16", rng, (50, 70), 40)
    (tx, ty), (ex, ey) = read_imagenet16(tmp_path)
    raw = pickle.loads((tmp_path / "ImageNet16" / "val_data").read_bytes())
    keep = [i for i, label in enumerate(raw["labels"]) if label <= 120]
    assert ex.shape == (len(keep), 3, 16, 16) and ex.dtype == torch.uint8
    assert ey.tolist() == [raw["labels"][i] - 1 for i in keep]  # 0-based, 121 and 1000 dropped
    assert ey[:2].tolist() == [0, 119]
    assert torch.equal(ex[0], torch.from_numpy(raw["data"][0].reshape(3, 16, 16)))
    assert int(ty.min()) >= 0 and int(ty.max()) <= 119 and len(tx) == len(ty)

    splits = load_splits("imagenet16_120", tmp_path / "ImageNet16")  # the folder itself works too
    assert (splits.num_classes, splits.image_size, splits.pad) == (120, 16, 2)
    assert len(splits.eval["valid"][1]) + len(splits.eval["test"][1]) == len(ey)


# --- errors ---------------------------------------------------------------------------------------


def test_missing_data_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--download"):
        load_splits("cifar10", tmp_path / "nowhere")
    with pytest.raises(DataError, match=str(tmp_path)):
        load_splits("cifar100", tmp_path)
    with pytest.raises(DataError, match="ImageNet16"):
        load_splits("imagenet16_120", tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_splits("mnist", tmp_path)


def test_truncated_file_is_one_clear_error(cifar10_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar10_dir / "cifar-10-batches-py", folder)
    os.chmod(folder / "data_batch_2", 0o644)
    data = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"data_batch_2.*corrupt"):
        read_cifar10(tmp_path)


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="refusing"):
        read_cifar10(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_fingerprint_names_the_bytes_read_not_the_folder(cifar10_dir: Path, tmp_path: Path) -> None:
    """Same files anywhere -> same fingerprint; other images (the JPEG set) or one changed byte -> another."""
    original = load_splits("cifar10", cifar10_dir).fingerprint
    copy = tmp_path / "copy" / "cifar-10-batches-py"
    shutil.copytree(cifar10_dir / "cifar-10-batches-py", copy)
    assert load_splits("cifar10", copy.parent).fingerprint == original
    assert load_splits("cifar10", cifar10_dir / "jpeg_q75").fingerprint != original
    raw = bytearray((copy / "test_batch").read_bytes())
    raw[-20] ^= 1  # one pixel of the last test image
    (copy / "test_batch").write_bytes(bytes(raw))
    assert load_splits("cifar10", copy.parent).fingerprint != original
    assert len(original) == 16


# --- loader -----------------------------------------------------------------------------------------


def _batches(x: torch.Tensor, y: torch.Tensor, seed: int, **kw: object) -> TrainBatches:
    return TrainBatches(x, y, batch_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), pad=2, seed=seed, **kw)


def test_loader_is_seeded_and_covers_every_image() -> None:
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(10)
    first = [(a.clone(), b.clone()) for a, b in _batches(x, y, 0).epoch()]
    again = [(a.clone(), b.clone()) for a, b in _batches(x, y, 0).epoch()]
    other = [(a.clone(), b.clone()) for a, b in _batches(x, y, 1).epoch()]
    assert [len(b) for _, b in first] == [4, 4, 2]  # last partial batch kept
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    assert sorted(torch.cat([b for _, b in first]).tolist()) == list(range(10))
    loader = _batches(x, y, 0)
    epoch1 = torch.cat([b for _, b in loader.epoch()])
    epoch2 = torch.cat([b for _, b in loader.epoch()])
    assert not torch.equal(epoch1, epoch2)  # a fresh permutation each epoch


@pytest.mark.parametrize("channels_last", [False, True])
def test_loader_outputs_crops_and_flips(channels_last: bool) -> None:
    """Every output image is a normalised crop (pad 2, zeros) of its source, possibly mirrored."""
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(12)
    loader = _batches(x, y, 3, channels_last=channels_last)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2)).float()
    flips = 0
    for images, labels in loader.epoch():
        assert images.dtype == torch.float32 and images.shape == (len(labels), 3, 8, 8)
        assert images.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        pixels = (images * 0.25 + 0.5) * 255
        for img, label in zip(pixels, labels.tolist(), strict=True):
            matches = []
            for dy in range(5):
                for dx in range(5):
                    crop = padded[label, :, dy : dy + 8, dx : dx + 8]
                    for flip in (False, True):
                        if torch.allclose(img, crop.flip(-1) if flip else crop, atol=1e-3):
                            matches.append(flip)
            assert matches, f"image {label} is no crop of its source"
            flips += all(matches)
    assert 0 < flips < 12


def test_normalise_uses_dataset_stats() -> None:
    norm = Normalise((0.5, 0.25, 0.0), (0.5, 0.25, 1.0), torch.device("cpu"))
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert norm(x)[0, :, 0, 0].tolist() == pytest.approx([1.0, 3.0, 1.0])


# --- several folders joined; 16-px images -----------------------------------------------------------


def test_joined_folders_give_every_real_image_once(cifar10_dir: Path) -> None:
    """Lossless + JPEG sets: 14,000 train and 3,000 test images, in the order given, none shared."""
    import csv

    lossless = load_splits("cifar10", cifar10_dir)
    jpeg = load_splits("cifar10", cifar10_dir / "jpeg_q75")
    joined = load_splits("cifar10", [cifar10_dir, cifar10_dir / "jpeg_q75"])
    (tx, ty), (ex, ey) = (joined.train_x, joined.train_y), joined.eval["test"]
    assert (len(ty), len(ey)) == (14_000, 3_000) and tx.shape[1:] == (3, 32, 32)
    assert torch.equal(tx[:4000], lossless.train_x) and torch.equal(tx[4000:], jpeg.train_x)
    assert torch.equal(ey[:1000], lossless.eval["test"][1]) and torch.equal(ey[1000:], jpeg.eval["test"][1])
    assert torch.bincount(ty, minlength=10).min() >= 1300  # both sets near class-balanced
    # no image twice: byte-identical rows, and (per manifest.csv) no original image in both sets
    for x in (tx, ex):
        assert len({row.numpy().tobytes() for row in x.flatten(1)}) == len(x)
    with open(cifar10_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    identity = {
        folder: {
            (r["orig_split"], r["label"], r["class_rank"])  # rank within class: known for every image
            for r in rows
            if r["folder"].startswith(folder)
        }
        for folder in ("cifar-10-batches-py", "jpeg_q75")
    }
    assert len(identity["cifar-10-batches-py"]) == 5_000 and len(identity["jpeg_q75"]) == 12_000
    assert not identity["cifar-10-batches-py"] & identity["jpeg_q75"]


def test_joined_fingerprint_covers_every_folder(cifar10_dir: Path, tmp_path: Path) -> None:
    """Same-named files in two folders both count; one changed byte in either folder shows; the
    single-folder forms (a path, a one-item list, a ':'-joined string of one) keep the old fingerprint."""
    single = load_splits("cifar10", cifar10_dir).fingerprint
    assert load_splits("cifar10", [str(cifar10_dir)]).fingerprint == single
    assert load_splits("cifar10", str(cifar10_dir) + os.pathsep).fingerprint == single
    both = load_splits("cifar10", [cifar10_dir, cifar10_dir / "jpeg_q75"])
    assert both.fingerprint not in (single, load_splits("cifar10", cifar10_dir / "jpeg_q75").fingerprint)
    as_string = load_splits("cifar10", os.pathsep.join([str(cifar10_dir), str(cifar10_dir / "jpeg_q75")]))
    assert as_string.fingerprint == both.fingerprint and len(as_string.train_y) == 14_000

    copy = tmp_path / "copy" / "cifar-10-batches-py"
    shutil.copytree(cifar10_dir / "cifar-10-batches-py", copy)
    twice = load_splits("cifar10", [cifar10_dir, copy.parent]).fingerprint
    raw = bytearray((copy / "data_batch_5").read_bytes())
    raw[-20] ^= 1  # one pixel of the second folder's last training image
    (copy / "data_batch_5").write_bytes(bytes(raw))
    assert load_splits("cifar10", [cifar10_dir, copy.parent]).fingerprint != twice
    with pytest.raises(DataError, match="does not exist"):
        load_splits("cifar10", [cifar10_dir, tmp_path / "absent"])


def test_16px_images_are_2x2_means_with_pad_2(cifar10_dir: Path) -> None:
    full = load_splits("cifar10", cifar10_dir)
    small = load_splits("cifar10", cifar10_dir, image_size=16, max_eval=100)
    assert small.train_x.shape == (4000, 3, 16, 16) and small.train_x.dtype == torch.uint8
    assert (small.image_size, small.pad) == (16, 2) and len(small.eval["test"][1]) == 100
    blocks = full.train_x[:5].float().unflatten(2, (16, 2)).unflatten(4, (16, 2)).mean((3, 5))
    assert torch.equal(small.train_x[:5], blocks.round().to(torch.uint8))
    assert torch.equal(small.train_y, full.train_y)
    batches = TrainBatches(
        small.train_x, small.train_y, batch_size=64, mean=small.mean, std=small.std, pad=small.pad, seed=0
    )
    x, _ = next(batches.epoch())
    assert x.shape == (64, 3, 16, 16)
    for bad in (12, 64, 0):
        with pytest.raises(DataError, match="image_size"):
            load_splits("cifar10", cifar10_dir, image_size=bad)


def test_spec_image_size_and_joined_data_dir() -> None:
    from pipeline.run.spec import SpecError
    from pipeline.run.spec_load import spec_from_dict

    base = {"name": "t", "protocols": [{"name": "nb201", "lr": 0.1}]}
    plain = spec_from_dict(base)
    assert plain.shape.image_size == 32 and "image_size" not in plain.identity()
    spec = spec_from_dict({**base, "image_size": 16, "data_dir": ["a", "b"]})
    assert spec.shape.image_size == 16 and spec.data_dir == ("a", "b") and spec.run_id != plain.run_id
    with pytest.raises(SpecError, match="image_size"):
        spec_from_dict({**base, "image_size": 12})
