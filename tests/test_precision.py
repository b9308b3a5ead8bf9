"""Precision is a run setting: validated, part of the run's identity, passed to every training and to
the base-LR finder's trials (so to its cache key), and recorded per row."""

from __future__ import annotations

import pytest

from core.config import PRECISIONS, ConfigError, TrainConfig
from pipeline.run.base_lr import cache_key, finder_config
from pipeline.run.spec import SpecError
from pipeline.run.spec_load import spec_from_dict

BASE = {
    "name": "p",
    "protocols": [
        {"name": "nb201", "lr": 0.1},
        {"name": "scaled", "init": "arch-source", "lr_rule": "official", "base_lr": "auto"},
    ],
}


def test_the_default_is_nb201s_fp32_for_runs_and_single_trainings() -> None:
    assert spec_from_dict(BASE).precision == "fp32" == TrainConfig().precision


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_reaches_the_training_and_the_finder(precision: str) -> None:
    spec = spec_from_dict({**BASE, "precision": precision})
    nb201, scaled = spec.protocols
    assert spec.train_config(nb201, 0, 0.1).precision == precision
    assert finder_config(spec, scaled, 0.1, 0).precision == precision


def test_precision_is_part_of_the_run_identity_and_the_finder_cache_key() -> None:
    fp32, bf16 = spec_from_dict({**BASE, "precision": "fp32"}), spec_from_dict({**BASE, "precision": "bf16"})
    assert fp32.run_id != bf16.run_id
    scaled = fp32.protocols[1]
    assert cache_key(fp32, scaled, "data") != cache_key(bf16, bf16.protocols[1], "data")


def test_an_unknown_precision_is_one_line_naming_the_choices() -> None:
    with pytest.raises(SpecError, match="precision 'fp16' is unknown; choose fp32"):
        spec_from_dict({**BASE, "precision": "fp16"})
    with pytest.raises(ConfigError, match="unknown precision"):
        TrainConfig(precision="half")
