"""NetShape: the NB201 macro skeleton's dimensions, walked once for the model, params and MACs.

The skeleton: a 3x3 stem to C channels, three stages of N cells at C, 2C, 4C channels joined by
stride-2 ResNet reductions (side halves), a final BN-ReLU, global pooling and a linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import nb201


@dataclass(frozen=True)
class Stage:
    """One stage: `cells` cells at `channels` x `side` x `side`; entered through a reduction from
    `reduction_from` channels (None for the first stage, which the stem feeds)."""

    index: int
    channels: int
    side: int
    cells: int
    reduction_from: int | None


@dataclass(frozen=True)
class NetShape:
    """Width C, cells per stage N, input side and classes: all the network's dimensions follow."""

    width: int = nb201.WIDTH
    cells_per_stage: int = nb201.CELLS_PER_STAGE
    image_size: int = 32
    num_classes: int = 10

    def stages(self) -> tuple[Stage, ...]:
        out, side = [], self.image_size
        for index in range(3):
            channels = self.width * 2**index
            if index > 0:
                side //= 2
            out.append(Stage(index, channels, side, self.cells_per_stage, channels // 2 if index else None))
        return tuple(out)

    @property
    def final_channels(self) -> int:
        return 4 * self.width

    def describe(self) -> str:
        return f"C={self.width} N={self.cells_per_stage} {self.image_size}px {self.num_classes} classes"
