"""The torch-free bottom layer: every fact the pipeline shares, declared once.

Datasets (`datasets`), the network's shape (`shape`), one training's settings (`config`), the
results row (`rows`), where numbers come from (`provenance`), atomic file writes (`atomic`) and
the marker for mistakes a user can fix (`errors`). Imports nothing else of this project.
"""

from core.atomic import atomic_path, atomic_write_text
from core.config import PRECISIONS, SCHEDULES, TrainConfig
from core.datasets import DATASETS, DatasetInfo, dataset_info
from core.errors import UserError
from core.shape import NetShape, Stage

__all__ = [
    "DATASETS",
    "PRECISIONS",
    "SCHEDULES",
    "DatasetInfo",
    "NetShape",
    "Stage",
    "TrainConfig",
    "UserError",
    "atomic_path",
    "atomic_write_text",
    "dataset_info",
]
