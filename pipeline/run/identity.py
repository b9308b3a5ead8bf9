"""Run identity: a run is its config + the data it read + the code that trained it.

The run folder is named by the config alone (`RunSpec.run_id`), so the same config with other images
or after an engine change lands in the same folder. `check_resume` compares what the folder's store
records (its `run_meta` table and every row's run_id / data_fingerprint / code_identity) with the run
about to start, and refuses, before any training, to count a row of another identity as finished:
one line naming what differs and how to proceed. Only a code change may be accepted explicitly
(`--allow-code-change`): the old rows keep their `code_identity`, the change is recorded in `run_meta`
once, and later resumes with the same code need the flag no more.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import UserError
from core.provenance import code_identity, code_version
from pipeline.run.spec import RunSpec
from pipeline.run.store import StoredRun

SCHEMA = "1"
"""Version of the `run_meta` layout below."""


class RunIdentityError(UserError):
    """The run folder holds results of another run (other config, data or code)."""


@dataclass(frozen=True)
class RunIdentity:
    """What the run about to start is: its config identity, data and code."""

    run_id: str
    config: dict[str, Any]
    data_fingerprint: str
    data_dir: str
    code_identity: str
    code_version: str

    @classmethod
    def of(cls, spec: RunSpec, data_fingerprint: str) -> RunIdentity:
        config = json.loads(json.dumps(spec.identity(), sort_keys=True, default=str))
        folders = spec.data_dir if isinstance(spec.data_dir, str) else os.pathsep.join(spec.data_dir)  # list: a:b
        return cls(spec.run_id, config, data_fingerprint, folders, code_identity(), code_version())

    def meta(self, previous: dict[str, str] | None = None, *, code_changed: bool = False) -> dict[str, str]:
        """The `run_meta` rows to record; a code change accepted is appended to `code_changes`."""
        previous = previous or {}
        now = datetime.now(UTC).isoformat(timespec="seconds")
        changes = json.loads(previous.get("code_changes", "[]"))
        if code_changed:
            changes.append({"from": previous.get("code_identity"), "to": self.code_identity, "at": now})
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "config": json.dumps(self.config, sort_keys=True),
            "data_fingerprint": self.data_fingerprint,
            "data_dir": self.data_dir,
            "code_identity": self.code_identity,
            "code_version": self.code_version,
            "created_at": previous.get("created_at", now),
            "code_changes": json.dumps(changes),
        }


def config_differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as `key: stored -> current`."""
    out: list[str] = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def check_resume(current: RunIdentity, stored: StoredRun | None, where: str, *, allow_code_change: bool) -> bool:
    """Raise RunIdentityError when the store at `where` holds another run's results; returns whether the
    code changed (and was allowed). Checked in order: config (run id), data, code."""
    if stored is None or (not stored.meta and not stored.rows):
        return False
    meta = stored.meta
    new_name = "give this run a new name (--set name=...) to start a fresh folder"

    run_ids = {meta.get("run_id")} | {identity.run_id for identity in stored.identities}
    run_ids.discard(None)
    if run_ids - {current.run_id}:
        other = sorted(run_ids - {current.run_id})[0]
        differs = ""
        if "config" in meta:
            keys = config_differences(json.loads(meta["config"]), current.config)
            differs = f"; config differs: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" if keys else ""
        raise RunIdentityError(
            f"{where} holds results of run {other}, not of this run {current.run_id}{differs}: move that file "
            f"away, or {new_name}"
        )

    fingerprints = {meta.get("data_fingerprint")} | {identity.data_fingerprint for identity in stored.identities}
    fingerprints.discard(None)
    if fingerprints - {current.data_fingerprint}:
        seen = sorted(fingerprints - {current.data_fingerprint})[0]
        was = f" from {meta['data_dir']}" if meta.get("data_dir") else ""
        raise RunIdentityError(
            f"data differs: {where} holds {stored.rows} row(s) trained on data {seen}{was}, but {current.data_dir} "
            f"holds data {current.data_fingerprint}; point data_dir (--data-dir) back at the run's data, or {new_name}"
        )

    codes = {meta.get("code_identity")} | {identity.code_identity for identity in stored.identities}
    codes.discard(None)
    if meta.get("code_identity") == current.code_identity:  # the change (if any) to this code was accepted
        codes -= {change.get("from") for change in json.loads(meta.get("code_changes", "[]"))}
    if codes - {current.code_identity}:
        if allow_code_change:
            return meta.get("code_identity") != current.code_identity or not meta
        old = sorted(codes - {current.code_identity})[0]
        version = f" ({meta['code_version']})" if meta.get("code_version") else ""
        raise RunIdentityError(
            f"code differs: {where} holds rows trained by code {old}{version}, this code is {current.code_identity} "
            f"({current.code_version}); rerun with --allow-code-change to keep them and train the rest with this "
            f"code (recorded in the store), or {new_name} to retrain everything"
        )
    return False
