"""Checkpoints: a directory a model is saved to and loaded from, without pickle.

Layout::

    DIR/config.json          {"format": "seqstream-checkpoint", "format_version": 1,
                              "model": "sasrec", "n_items": N, "config": {...}}
    DIR/vocab.json           item ids, index 1.. (index 0 = unknown is implicit)
    DIR/weights.safetensors  tensors (neural: the module's, and ``item_counts``, the training
                         counts, since they are stored; older ones load without) or count
                         arrays (baselines)
    DIR/meta.json            model_version, created_at, vocab_fingerprint, and the
                             training metadata given to save_model (data hash, split, metrics, ...)

Loading reads JSON and safetensors only and builds the model class named in
``config.json`` from the fixed registry :data:`model_core.models.MODELS`: nothing from the
files is ever executed.

Nothing is allocated from a size the files merely claim. Before the model is built the loader
checks every numeric config value against :data:`CONFIG_LIMITS` (and that it is finite and not
negative), reads only the header of ``weights.safetensors`` (tensor names, dtypes, shapes,
byte ranges) and compares it with the tensors the config implies: for a neural model, the
model is first built on PyTorch's ``meta`` device (shapes without storage); for a counting
model, the shapes follow from the vocabulary. A config that disagrees with the weights (e.g.
``hidden: 12000`` beside 64-unit weights) is refused before any memory is reserved, so what
is allocated is bounded by the size of the files on disk. After loading, every float tensor
must be finite and every count non-negative, and a count model's item table must index the
vocabulary. Every refusal is a :class:`CheckpointError` naming the file and the field or tensor.
"""

from __future__ import annotations

import hashlib
import math
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

#: Upper bounds of model hyper-parameters a checkpoint may name (far above any model trained
#: here; they bound what a config can make the loader or the scorer allocate).
CONFIG_LIMITS = {
    "dim": 8192, "hidden": 16384, "layers": 64, "heads": 256, "max_len": 10_000,
    "text_dim": 8192, "ffn_mult": 64, "negatives": 1 << 20, "n_categories": 1 << 24,
    "window": 10_000, "neighbours": 100_000, "recent": 10_000,
    "k": 1_000_000, "sample_size": 100_000_000,
}
_HEADER_MAX = 100 << 20  # bytes of a safetensors JSON header
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


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
    from model_core.models.base import ITEM_COUNTS

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
    _check_config(d, model_cfg)
    weights = d / "weights.safetensors"
    header = _read_header(weights)
    neural = issubclass(cls, NeuralRecommender)
    if neural:
        expected = _neural_shapes(d, cls, vocab, model_cfg, header)
        if ITEM_COUNTS in header:  # training counts (absent from older checkpoints)
            expected[ITEM_COUNTS] = ("F", (len(vocab),))
    else:
        expected = _count_shapes(cls, vocab, header)
    _check_header(d, header, expected)
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    try:
        model = cls(vocab, model_cfg, device=dev)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d}/config.json: cannot build {name} from its config: {e}") from None
    try:
        if neural:
            arrays = load_torch(str(weights), device="cpu")
        else:
            arrays = load_numpy(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} cannot be read: {e}") from None
    _check_values(weights, arrays, neural, len(vocab))
    try:
        model.load_arrays(arrays)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{weights} does not match config.json "
                              f"({name}): {str(e)[:300]}") from None
    model.version = str(meta.get("model_version") or f"{name}-unversioned")
    model.meta = meta
    return model


def _check_config(d: Path, cfg: dict) -> None:
    """Every numeric value finite and not negative; the sizes within :data:`CONFIG_LIMITS`."""
    for key, value in cfg.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or value < 0:
            raise CheckpointError(f"{d}/config.json: config.{key} = {value!r} must be a finite, "
                                  "non-negative number")
        limit = CONFIG_LIMITS.get(key)
        if limit is not None and value > limit:
            raise CheckpointError(f"{d}/config.json: config.{key} = {value!r} is above the "
                                  f"limit of {limit}")


def _read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) from a safetensors file's header, checked against the file's
    size (each tensor's byte range inside the file and of the size its shape implies)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(_HEADER_MAX, size - 8):
                raise CheckpointError(f"{path} cannot be read: not a safetensors file (header "
                                      f"length {n} in a file of {size} bytes)")
            header = orjson.loads(f.read(n))
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    except orjson.JSONDecodeError as e:
        raise CheckpointError(f"{path} cannot be read: its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} cannot be read: its header is not a JSON object")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (dtype in _ITEMSIZE and all(isinstance(x, int) and x >= 0 for x in shape)
                  and isinstance(begin, int) and isinstance(end, int)
                  and 0 <= begin <= end <= data_size
                  and end - begin == math.prod(shape) * _ITEMSIZE[dtype])
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path} cannot be read: the header entry of tensor {name!r} "
                                  f"is invalid or lies outside the file ({str(info)[:200]})")
        out[name] = (dtype, tuple(shape))
    return out


def _neural_shapes(d: Path, cls, vocab, cfg: dict,
                   header: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors a neural model built from ``cfg`` holds: (kind "F" or "I", shape), found by
    building it on the ``meta`` device (no storage allocated); a transition table's sizes
    (:mod:`model_core.models.transitions`) are its own, as an item table's."""
    import torch

    try:
        with torch.device("meta"):
            model = cls(vocab, cfg, device=torch.device("meta"))
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise CheckpointError(f"{d}/config.json: cannot build {cls.name} from its config: "
                              f"{str(e)[:300]}") from None
    out = {k: ("F" if v.is_floating_point() else "I", tuple(v.shape))
           for k, v in model.module.state_dict().items()}
    if "transitions.indices" in out:  # also its rows: items added online have none
        for key, kind, of in (("indptr", "I", "indptr"), ("indices", "I", "indices"),
                              ("logc", "F", "indices")):
            got = header.get(f"transitions.{of}", ("", (0,)))[1]
            out[f"transitions.{key}"] = (kind, got if len(got) == 1 else (-1,))
    return out


def _count_shapes(cls, vocab, header: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The arrays a counting model over ``vocab`` holds (an item table's length is its own)."""
    from model_core.models.markov import ItemTableRecommender
    from schemas.actions import N_ACTIONS

    n = len(vocab)
    out = {"item_counts": ("F", (n,)), "action_counts": ("F", (N_ACTIONS + 1, N_ACTIONS))}
    if issubclass(cls, ItemTableRecommender):
        nnz = header.get("indices", ("", (0,)))[1]
        nnz = nnz[0] if len(nnz) == 1 else -1
        out.update(indptr=("I", (n + 1,)), indices=("I", (nnz,)), data=("F", (nnz,)))
    extra = getattr(cls, "extra_shapes", None)  # e.g. the session-kNN models' sessions
    if extra is not None:
        out.update(extra(n, header))
    return out


def _check_header(d: Path, header: dict, expected: dict) -> None:
    path = d / "weights.safetensors"
    for key, (kind, shape) in expected.items():  # shapes first: a changed size shows here
        if key not in header:
            continue
        dtype, got = header[key]
        if got != shape:
            raise CheckpointError(f"{path} does not match config.json: tensor {key!r} has shape "
                                  f"{list(got)} in the weights, the config gives {list(shape)}")
        if (dtype[0] in "FB" and dtype != "BOOL") != (kind == "F"):
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, expected "
                                  f"{'a float' if kind == 'F' else 'an integer'} type")
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path} does not match config.json: "
            + (f"missing tensors {', '.join(missing[:5])}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected tensors {', '.join(extra[:5])}" if extra else ""))


def _check_values(path: Path, arrays: dict, neural: bool, n_vocab: int) -> None:
    """Finite floats everywhere; non-negative counts (a neural model's training counts
    too); for counting models an item table (CSR ``indptr`` / ``indices``) that indexes the
    vocabulary."""
    if neural:
        import torch

        from model_core.models.base import ITEM_COUNTS

        for key, t in arrays.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
        counts = arrays.get(ITEM_COUNTS)
        if counts is not None and bool((counts < 0).any()):
            raise CheckpointError(f"{path}: tensor {ITEM_COUNTS!r} holds negative counts")
        return
    for key, a in arrays.items():
        if a.dtype.kind == "f":
            if not np.isfinite(a).all():
                raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
            if (a < 0).any():
                raise CheckpointError(f"{path}: tensor {key!r} holds negative counts")
    if "indptr" in arrays:
        indptr, indices = arrays["indptr"], arrays["indices"]
        if (indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any()):
            raise CheckpointError(f"{path}: tensor 'indptr' is not a valid row index of "
                                  f"'indices' (must rise from 0 to {len(indices)})")
        if len(indices) and (indices.min() < 0 or indices.max() >= n_vocab):
            raise CheckpointError(f"{path}: tensor 'indices' holds items outside the "
                                  f"vocabulary (0..{n_vocab - 1})")


__all__ = ["CONFIG_LIMITS", "CheckpointError", "load_model", "read_meta", "save_model"]
