"""Training throughput: this engine against a loop built the way the official NB201 code is.

Reference: a torchvision-style Dataset over the same images (PIL image per item,
RandomHorizontalFlip + RandomCrop(32, 4) + ToTensor + Normalize), DataLoader(num_workers=2,
shuffle), NB201's model computing all six edges (`none` as x·0), the same SGD (Nesterov, wd) and
per-step cosine LR, fp32 NCHW. Engine: `pipeline.train.engine.train` (pruned live graph, on-device
augmentation, channels_last), once forced to fp32 and once with its default precision ('auto':
bf16 autocast where native). Both train the same cells on the same images for the same number
of epochs; img/s counts training images over the training loop (the reference's loader start-up
included, since a real run pays it every epoch). "overall" = all images / all time.

Run (about 3-4 minutes on a 2-core CPU):
    .venv/bin/python perf/train_throughput.py --data-dir ../shared/data/cifar10
Goal on that CPU: overall ratio ≥ 3. `--device cuda` runs both loops on a GPU.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cells import Cell
from core.config import TrainConfig, cosine
from pipeline.train.data import DatasetSplits, load_splits
from pipeline.train.engine import train
from pipeline.train.model import build_model

CELLS = (
    "3_33_333",  # all conv3x3: nothing to prune
    "4_21_211",  # NB201 index 0
    "3_34_131",
    "1_13_103",
    "3_03_101",  # ResNet-like, two none
    "3_00_433",  # two none
    "0_00_034",  # four none
    "2_00_012",  # three none, a conv fed by zeros
)


class ImageDataset(Dataset):
    """torchvision's CIFAR10.__getitem__: a PIL image per item, then the transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: transforms.Compose) -> None:
        self.x = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())  # HWC, as torchvision keeps CIFAR
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def reference_throughput(
    cell: Cell,
    data: DatasetSplits,
    *,
    width: int,
    cells_per_stage: int,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str = "cpu",
) -> float:
    """Images/s of the official-style loop (fp32, NCHW; batches copied to `device` as the official code does)."""
    transform = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(data.image_size, padding=data.pad),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    loader = DataLoader(
        ImageDataset(data.train_x, data.train_y, transform), batch_size=batch_size, shuffle=True, num_workers=2
    )
    model = build_model(cell, data.num_classes, width=width, cells_per_stage=cells_per_stage, prune=False).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    total_steps, step, images = epochs * len(loader), 0, 0
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = cosine(lr, step, total_steps)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            images += len(y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10"))
    parser.add_argument("--sizes", default="8x1:2560:2,16x5:768:1", help="WIDTHxN:IMAGES:EPOCHS,...")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells (any form)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="device of both loops (cpu, cuda)")
    parser.add_argument("--no-reference", action="store_true", help="time the engine only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cells = [Cell.parse(c) for c in args.cells.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}")

    for size in args.sizes.split(","):
        shape, n_images, epochs = size.split(":")
        width, n = (int(v) for v in shape.split("x"))
        data = load_splits("cifar10", args.data_dir, max_train=int(n_images), max_eval=256)
        data = replace(data, eval={})  # time training alone
        steps = int(epochs) * math.ceil(len(data.train_y) / args.batch_size)
        images = int(epochs) * len(data.train_y)
        print(f"\nC={width}, N={n}: {len(data.train_y)} images x {epochs} epochs = {steps} steps per cell")
        print(
            f"{'cell':<10} {'reference':>10} {'engine fp32':>12} {'ratio':>6} {'engine auto':>12} {'ratio':>6}  (img/s)"
        )
        times = {"reference": 0.0, "fp32": 0.0, "auto": 0.0}
        for cell in cells:
            speed = {"reference": math.nan}
            if not args.no_reference:
                speed["reference"] = reference_throughput(
                    cell,
                    data,
                    width=width,
                    cells_per_stage=n,
                    epochs=int(epochs),
                    batch_size=args.batch_size,
                    lr=0.1,
                    device=args.device,
                )
            cfg = TrainConfig(
                width=width, cells_per_stage=n, epochs=int(epochs), batch_size=args.batch_size, device=args.device
            )
            for precision in ("fp32", "auto"):
                record = train(cell, data, cfg.with_(precision=precision))
                speed[precision] = record.images_per_s
            for key in times:
                times[key] += images / speed[key]
            ref = speed["reference"]
            print(
                f"{cell.official_code:<10} {ref:>10.1f} {speed['fp32']:>12.1f} {speed['fp32'] / ref:>6.2f} "
                f"{speed['auto']:>12.1f} {speed['auto'] / ref:>6.2f}",
                flush=True,
            )
        # overall: all images over all time (every cell does the same work), i.e. a time-weighted mean
        overall = {key: len(cells) * images / t if t else math.nan for key, t in times.items()}
        ref = overall["reference"]
        print(
            f"{'overall':<10} {ref:>10.1f} {overall['fp32']:>12.1f} {overall['fp32'] / ref:>6.2f} "
            f"{overall['auto']:>12.1f} {overall['auto'] / ref:>6.2f}   ({record.precision} for auto)"
        )


if __name__ == "__main__":
    main()
