"""Disk cache of generated dataset arrays.

Each generated split is stored as one ``.npz`` file under ``$MTLREPRO_CACHE_DIR`` (if set) or
``<repo root>/.cache/data/`` (repo root = the parent of the ``mtlrepro`` package directory).
The file name is a hash of (dataset name, split, generation config as a dict, generator
version), so any change to what would be generated gets a new file.  Files are written
atomically (temporary file in the same directory, then :func:`os.replace`), so an interrupted
run never leaves half a file behind; a file that cannot be read (or whose stored key does not
match) is regenerated with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "MTLREPRO_CACHE_DIR"
_META_KEY = "__cache_key__"
_warned: set[Path] = set()


def cache_dir() -> Path:
    """The cache directory: ``$MTLREPRO_CACHE_DIR`` or ``<repo root>/.cache/data``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "data"


def _key_text(dataset: str, split: str, config: Mapping[str, Any], version: int) -> str:
    """Canonical JSON of everything the cached arrays depend on."""
    payload = {"dataset": dataset, "split": split, "config": dict(config), "version": version}
    return json.dumps(payload, sort_keys=True, default=list)


def cache_path(dataset: str, split: str, config: Mapping[str, Any], version: int) -> Path:
    """Where the arrays of one generated split are cached.

    Args:
        dataset: dataset name.
        split: split name.
        config: the generation parameters (JSON-serialisable values).
        version: the generator's version constant (bump it when generation changes).
    """
    digest = hashlib.sha256(_key_text(dataset, split, config, version).encode()).hexdigest()
    return cache_dir() / f"{dataset}-{split}-{digest[:16]}.npz"


def _load(path: Path, key: str) -> dict[str, np.ndarray]:
    """Read a cache file; raises ``ValueError`` if its stored key differs from ``key``."""
    with np.load(path, allow_pickle=False) as data:
        if _META_KEY not in data.files or str(data[_META_KEY]) != key:
            raise ValueError("cache key mismatch")
        return {name: data[name] for name in data.files if name != _META_KEY}


def _save(path: Path, arrays: Mapping[str, np.ndarray], key: str) -> None:
    """Write ``arrays`` (and the key) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{_META_KEY: np.array(key)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_generate(
    dataset: str,
    split: str,
    config: Mapping[str, Any],
    version: int,
    generate: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Cached arrays of one split, generating (and caching) them if needed.

    Args:
        dataset: dataset name.
        split: split name.
        config: the generation parameters (JSON-serialisable values); part of the cache key.
        version: the generator's version constant; part of the cache key.
        generate: builds the arrays when there is no valid cache file.
    """
    path = cache_path(dataset, split, config, version)
    key = _key_text(dataset, split, config, version)
    if path.exists():
        try:
            return _load(path, key)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            if path not in _warned:
                _warned.add(path)
                warnings.warn(
                    f"cache file {path} is unreadable ({exc}); regenerating it", stacklevel=2
                )
    arrays = generate()
    try:
        _save(path, arrays, key)
    except OSError as exc:
        warnings.warn(f"could not write cache file {path} ({exc}); continuing", stacklevel=2)
    return arrays


def split_cache_key(config: Any, split: str) -> dict[str, Any]:
    """The fields of a generated dataset's config dataclass one split's arrays depend on.

    Leaves out the task subset and the other splits' sizes (``tasks``, ``n_train``, ``n_val``,
    ``n_test``) and adds ``n``, this split's size, so one cached file serves every task subset.

    Args:
        config: the dataset's config dataclass (with ``tasks`` and ``n_<split>`` fields).
        split: ``train``, ``val`` or ``test``.
    """
    key = dataclasses.asdict(config)
    for name in ("tasks", "n_train", "n_val", "n_test"):
        del key[name]
    key["n"] = getattr(config, f"n_{split}")
    return key
