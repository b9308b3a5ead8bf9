"""The semantic checks of a run config: everything that needs no data and no Ray, each check once,
each failure one line naming the key and the fix (`SpecError`).
"""

from __future__ import annotations

import re

from cells import INIT_RULES, LR_RULES, N_CELLS
from core.config import PARAMETRIZATIONS, PRECISIONS, SCHEDULES
from core.datasets import DATASET_NAMES, image_size_problem
from pipeline.run.spec import FINDER_SCORES, SELECTIONS, Protocol, RunSpec, SpecError, parse_cell_ref

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A run name is a folder name under results/: no path separators, no leading dot."""
PROTOCOL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
RESERVED_PROTOCOL_NAMES: frozenset[str] = frozenset({"published", "reference", "params", "macs", "floor", "bar"})
"""Names the report gives its own columns and yardsticks: a protocol named so would be mislabelled."""
URI_SCHEMES: tuple[str, ...] = ("file", "s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
"""What `results_uri` may name: the filesystems `pyarrow.fs.FileSystem.from_uri` knows."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


def validate(spec: RunSpec) -> None:
    """All checks that need no data and no Ray: cheap, before any work."""
    _check(
        NAME_PATTERN.fullmatch(spec.name) is not None,
        f"name {spec.name!r} must be a folder name: letters, digits, '.', '_' or '-', not starting with a dot",
    )
    _check(
        spec.dataset in DATASET_NAMES,
        f"dataset {spec.dataset!r} is unknown; choose one of {', '.join(DATASET_NAMES)}",
    )
    for key in ("width", "cells_per_stage", "epochs", "batch_size", "max_attempts"):
        value = getattr(spec, key)
        _check(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"{key} must be a positive integer, got {value!r}",
        )
    if spec.image_size is not None and spec.dataset in DATASET_NAMES:
        problem = image_size_problem(spec.dataset, spec.image_size)
        _check(problem is None, f"{problem} (or null for the native size)")
    for key in ("max_train", "max_eval"):
        value = getattr(spec, key)
        _check(value is None or (isinstance(value, int) and value >= 1), f"{key} must be a positive integer or null")
    _check(all(isinstance(s, int) for s in spec.seeds) and len(spec.seeds) >= 1, "seeds must be a list of integers")
    _check(
        len(set(spec.seeds)) == len(spec.seeds),
        f"seeds must be distinct, got {list(spec.seeds)} (each seed trains every unit once)",
    )
    _check(spec.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {spec.device!r}")
    _check(
        spec.device != "cuda" or spec.resources.gpus_per_trial != 0,
        "device cuda needs GPUs for its trials: set resources.gpus_per_trial (a fraction, or auto), or device auto/cpu",
    )
    selection = spec.cells
    _check(
        selection.select in SELECTIONS,
        f"cells.select {selection.select!r} is unknown; choose one of {', '.join(SELECTIONS)}",
    )
    if selection.select == "sample":
        _check(1 <= selection.count <= N_CELLS, f"cells.count must be in 1..{N_CELLS}, got {selection.count}")
    if selection.select == "list":
        _check(len(selection.cells) > 0, "cells.select is 'list' but cells.cells is empty")
        for ref in selection.cells:
            try:
                parse_cell_ref(ref)
            except IndexError as error:
                raise SpecError(f"cells.cells: {error}") from None
    _check_protocols(spec)
    _check(
        spec.precision in PRECISIONS,
        f"precision {spec.precision!r} is unknown; choose fp32 (NB201's), bf16 or auto (bf16 where native)",
    )
    search = spec.base_lr_search
    _check(
        0 < search.low < search.high and search.points >= 1 and search.epochs >= 1 and len(search.seeds) >= 1,
        "base_lr_search needs 0 < low < high, points >= 1, epochs >= 1 and at least one seed",
    )
    _check(
        len(set(search.seeds)) == len(search.seeds),
        f"base_lr_search.seeds must be distinct, got {list(search.seeds)}",
    )
    _check(
        len(search.seeds) >= 2 or search.allow_one_seed or not any(p.base_lr == "auto" for p in spec.protocols),
        "base_lr_search.seeds has one seed: the pick rule's standard error is undefined; give at least two seeds, "
        "or set base_lr_search.allow_one_seed: true (the pick then has no error bar)",
    )
    _check(
        spec.schedule in SCHEDULES and spec.schedule != "constant",  # constant is the finder's, not a run's
        f"schedule {spec.schedule!r} is unknown; choose epoch (NB201's cosine, per epoch) or step (cosine per step)",
    )
    _check(
        isinstance(spec.eval_every, int) and not isinstance(spec.eval_every, bool) and spec.eval_every >= 0,
        f"eval_every must be an integer >= 0 (0 = evaluate only after the last epoch), got {spec.eval_every!r}",
    )
    _check_resources(spec)
    _check_results_uri(spec.results_uri)
    _check_study(spec)


def _check_study(spec: RunSpec) -> None:
    """The finder's score, and the LR-transfer study's own rules: no protocols, a known init, >= 2 seeds."""
    search = spec.base_lr_search
    _check(
        search.score in FINDER_SCORES,
        f"base_lr_search.score {search.score!r} is unknown; choose one of {', '.join(FINDER_SCORES)}",
    )
    if spec.lr_transfer is None:
        return
    init = spec.lr_transfer.init
    _check(init in INIT_RULES, f"lr_transfer.init {init!r} is unknown; choose one of {', '.join(INIT_RULES)}")
    _check(
        not spec.protocols,
        "an LR-transfer study (lr_transfer set) trains the base_lr_search grid on every cell; remove `protocols`",
    )
    _check(
        len(search.seeds) >= 2 or search.allow_one_seed,
        "lr_transfer: base_lr_search.seeds needs at least two seeds (the pick rule's standard error), "
        "or base_lr_search.allow_one_seed: true",
    )


def _check_protocols(spec: RunSpec) -> None:
    """Unique names; a known init; exactly one of a fixed LR or a scaling rule with its base LR."""
    names = [p.name for p in spec.protocols]
    _check(len(set(names)) == len(names), f"protocol names must be unique, got {names}")
    for p in spec.protocols:
        where = f"protocol {p.name!r}"
        _check(
            PROTOCOL_PATTERN.fullmatch(p.name) is not None,
            f"{where}: a protocol name is letters, digits, '.', '_' or '-' (it names files and columns of the report)",
        )
        _check(
            p.name.lower() not in RESERVED_PROTOCOL_NAMES,
            f"{where}: the report already uses that name ({', '.join(sorted(RESERVED_PROTOCOL_NAMES))}); rename it",
        )
        _check(p.init in INIT_RULES, f"{where}: init {p.init!r} is unknown; choose one of {', '.join(INIT_RULES)}")
        _check((p.lr is None) != (p.lr_rule is None), f"{where}: set exactly one of lr (fixed) or lr_rule (scaled)")
        if p.lr is not None:
            _check(isinstance(p.lr, int | float) and p.lr > 0, f"{where}: lr must be a positive number")
            _check(p.base_lr is None, f"{where}: base_lr only applies with lr_rule")
        else:
            _check(
                p.lr_rule in LR_RULES, f"{where}: lr_rule {p.lr_rule!r} is unknown; choose one of {', '.join(LR_RULES)}"
            )
            _check(
                p.base_lr == "auto" or (isinstance(p.base_lr, int | float) and p.base_lr > 0),
                f"{where}: base_lr must be a positive number or 'auto'",
            )
        _check_mup(p, where)


def _check_mup(p: Protocol, where: str) -> None:
    """`parametrization`: sp, or mup with a fixed LR and a base and a delta width (core.config.PARAMETRIZATIONS)."""
    _check(
        p.parametrization in PARAMETRIZATIONS,
        f"{where}: parametrization {p.parametrization!r} is unknown; choose one of {', '.join(PARAMETRIZATIONS)}",
    )
    widths = (p.mup_base_width, p.mup_delta_width)
    if p.parametrization == "sp":
        _check(
            widths == (None, None), f"{where}: mup_base_width and mup_delta_width only apply with parametrization: mup"
        )
        return
    _check(
        p.lr is not None,
        f"{where}: parametrization mup takes a fixed lr (MuSGD at NB201's 0.1, the paper's App. E.3), not lr_rule",
    )
    _check(
        all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths),
        f"{where}: parametrization mup needs mup_base_width and mup_delta_width, positive integers (e.g. 16 and 8)",
    )
    _check(
        widths[0] != widths[1],
        f"{where}: mup_delta_width must differ from mup_base_width (the delta only marks which dimensions are widths)",
    )


def _check_resources(spec: RunSpec) -> None:
    res = spec.resources
    _check(
        isinstance(res.cpus_per_trial, int | float) and res.cpus_per_trial > 0, "resources.cpus_per_trial must be > 0"
    )
    _check(
        res.gpus_per_trial == "auto" or (isinstance(res.gpus_per_trial, int | float) and res.gpus_per_trial >= 0),
        "resources.gpus_per_trial must be a number >= 0 or 'auto'",
    )
    _check(isinstance(res.torch_threads, int) and res.torch_threads >= 1, "resources.torch_threads must be >= 1")
    _check(
        res.fuse == "auto" or (isinstance(res.fuse, int) and res.fuse >= 1),
        f"resources.fuse must be a positive integer or 'auto', got {res.fuse!r}",
    )


def _check_results_uri(uri: object) -> None:
    """Shape only (no I/O here): the store opens it, and writes a probe, before any training."""
    if uri is None:
        return
    scheme, sep, rest = str(uri).partition("://")
    _check(
        isinstance(uri, str) and ((sep and scheme in URI_SCHEMES and rest) or (not sep and uri.startswith("/"))),
        f"results_uri must be a URI such as s3://bucket/prefix or file:///abs/path (schemes: "
        f"{', '.join(URI_SCHEMES)}), got {uri!r}",
    )
