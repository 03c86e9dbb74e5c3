"""Checkpoints: a directory a model is saved to and loaded from, without pickle.

Layout::

    DIR/config.json          {"format": "seqstream-checkpoint", "format_version": 1,
                              "model": "sasrec", "n_items": N, "config": {...}}
    DIR/vocab.json           item ids, index 1.. (index 0 = unknown is implicit)
    DIR/weights.safetensors  tensors (neural) or count arrays (baselines)
    DIR/meta.json            model_version, created_at, vocab_fingerprint, and the
                             training metadata given to save_model (data hash, split, metrics, ...)

Loading reads JSON and safetensors only and builds the model class named in
``config.json`` from the fixed registry :data:`model_core.models.MODELS`: nothing from the
files is ever executed.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import orjson
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from model_core.exceptions import CheckpointError
from model_core.vocab import ItemVocab

FORMAT = "seqstream-checkpoint"
FORMAT_VERSION = 1
FILES = ("config.json", "vocab.json", "weights.safetensors", "meta.json")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(model, directory: str | Path, meta: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed); returns the directory.

    ``meta``: training metadata (data hash, split, metrics, ...) stored in ``meta.json``.
    The model's ``version`` becomes ``<name>-<hash of the weights>`` if it was untrained.
    """
    from model_core.models import NeuralRecommender

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = model.state_arrays()
    tmp = d / "weights.safetensors.tmp"
    if isinstance(model, NeuralRecommender):
        save_torch(arrays, str(tmp))
    else:
        save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:12]
    os.replace(tmp, d / "weights.safetensors")
    if not model.version or model.version == "untrained":
        model.version = f"{model.name}-{digest}"
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.name,
              "n_items": model.vocab.n_items, "config": model.config_full}
    _write(d / "config.json", orjson.dumps(config, option=orjson.OPT_INDENT_2))
    model.vocab.save(d / "vocab.json.tmp")
    os.replace(d / "vocab.json.tmp", d / "vocab.json")
    full_meta = {**(getattr(model, "meta", None) or {}), **(meta or {}),
                 "model_version": model.version, "weights_sha256_12": digest,
                 "vocab_fingerprint": model.vocab.fingerprint(),
                 "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    model.meta = full_meta
    _write(d / "meta.json", orjson.dumps(full_meta, option=orjson.OPT_INDENT_2
                                         | orjson.OPT_SERIALIZE_NUMPY))
    return d


def _read_json(path: Path) -> dict:
    try:
        obj = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return obj


def read_meta(directory: str | Path) -> dict:
    """The ``meta.json`` of a checkpoint (training metadata)."""
    return _read_json(Path(directory) / "meta.json")


def load_model(directory: str | Path, device: str = "auto"):
    """Load a checkpoint directory as a :class:`~model_core.predictor.Recommender`.

    Raises :class:`CheckpointError` with the reason when the directory is missing,
    incomplete, of an unknown format or model, or its files disagree with each other.
    """
    from model_core.device import resolve_device
    from model_core.models import MODELS, NeuralRecommender

    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist (train one with "
                              "`seqstream train ... --out DIR`)")
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {d} is incomplete: missing {', '.join(missing)}")
    cfg = _read_json(d / "config.json")
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{d}/config.json is not a seqstream checkpoint (format "
                              f"{cfg.get('format')!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{d}: checkpoint format version {cfg.get('format_version')!r} "
                              f"is not supported (this build reads {FORMAT_VERSION})")
    name = cfg.get("model")
    cls = MODELS.get(name)
    if cls is None:
        raise CheckpointError(f"{d}: unknown model {name!r}; known: {', '.join(MODELS)}")
    try:
        vocab = ItemVocab.load(d / "vocab.json")
    except (ValueError, orjson.JSONDecodeError) as e:
        raise CheckpointError(f"{d}/vocab.json: {e}") from None
    if cfg.get("n_items") != vocab.n_items:
        raise CheckpointError(f"{d}: config.json says {cfg.get('n_items')} items but vocab.json "
                              f"holds {vocab.n_items}")
    meta = _read_json(d / "meta.json")
    model_cfg = cfg.get("config")
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{d}/config.json: 'config' must be an object")
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    try:
        model = cls(vocab, model_cfg, device=dev)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d}/config.json: cannot build {name} from its config: {e}") from None
    try:
        if isinstance(model, NeuralRecommender):
            arrays = load_torch(str(d / "weights.safetensors"), device="cpu")
        else:
            arrays = load_numpy(str(d / "weights.safetensors"))
        model.load_arrays(arrays)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{d}/weights.safetensors cannot be read: {e}") from None
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{d}/weights.safetensors does not match config.json "
                              f"({name}): {str(e)[:300]}") from None
    model.version = str(meta.get("model_version") or f"{name}-unversioned")
    model.meta = meta
    return model


__all__ = ["CheckpointError", "load_model", "read_meta", "save_model"]
