"""Text-vector cache: encode each (encoder, text) once, keep the vectors in safetensors.

The cache is content-addressed: an entry's key is ``sha256(encoder fingerprint + text)``
(16 bytes), so an item whose description changed, or any item under another encoder, misses
and is encoded again, while unchanged items are read back. The file
(``text_vectors.safetensors``, by default next to the checkpoint) holds two tensors,
``keys`` uint8 ``[N, 16]`` and ``vectors`` float32 ``[N, dim]``, and metadata naming the
encoder. Entries of another encoder are dropped when the file is rewritten.

:func:`encode_items` is the one entry point: ids + texts in, vectors out, with counts of what
came from the cache and what was encoded.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_core.text.encoder import TextEncoder
from model_core.text.exceptions import TextCacheError

__all__ = ["CACHE_FILE", "EncodeResult", "TextVectorCache", "encode_items", "text_key"]

CACHE_FILE = "text_vectors.safetensors"
CACHE_FORMAT = "seqstream-text-cache/1"
KEY_BYTES = 16


def text_key(fingerprint: str, text: str) -> bytes:
    """Cache key of ``text`` under the encoder with ``fingerprint``."""
    return hashlib.sha256(f"{fingerprint}\0{text}".encode()).digest()[:KEY_BYTES]


class TextVectorCache:
    """In-memory view of one cache file for one encoder (``fingerprint``, ``dim``)."""

    def __init__(self, path: str | Path | None, fingerprint: str, dim: int,
                 encoder_name: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.fingerprint, self.dim, self.encoder_name = fingerprint, int(dim), encoder_name
        self._rows: dict[bytes, np.ndarray] = {}
        self.dirty = False
        if self.path is not None and self.path.is_file():
            self._load()

    def __len__(self) -> int:
        return len(self._rows)

    def _load(self) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != CACHE_FORMAT:
                    raise TextCacheError(f"{self.path}: not a seqstream text-vector cache "
                                         f"(format {meta.get('format')!r}); delete it or pick another path")
                if meta.get("fingerprint") != self.fingerprint or int(meta.get("dim", -1)) != self.dim:
                    self.dirty = True  # another encoder: nothing reusable, rewrite on save
                    return
                keys = f.get_tensor("keys")
                vectors = f.get_tensor("vectors")
        except TextCacheError:
            raise
        except Exception as e:  # a truncated or foreign file: say so, never unpickle
            raise TextCacheError(f"{self.path}: unreadable text-vector cache ({e}); delete it to rebuild") from e
        if keys.shape[0] != vectors.shape[0] or keys.shape[1:] != (KEY_BYTES,):
            raise TextCacheError(f"{self.path}: keys and vectors do not match; delete it to rebuild")
        for k, v in zip(keys, vectors, strict=True):
            self._rows[k.tobytes()] = v

    def get(self, key: bytes) -> np.ndarray | None:
        return self._rows.get(key)

    def put(self, key: bytes, vector: np.ndarray) -> None:
        self._rows[key] = np.asarray(vector, dtype=np.float32)
        self.dirty = True

    def save(self, path: str | Path | None = None) -> Path:
        from safetensors.numpy import save_file

        path = Path(path) if path is not None else self.path
        if path is None:
            raise TextCacheError("no path to save the text-vector cache to")
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(self._rows), dtype=np.uint8).reshape(-1, KEY_BYTES)
        vectors = (np.stack(list(self._rows.values())).astype(np.float32) if self._rows
                   else np.zeros((0, self.dim), dtype=np.float32))
        tmp = path.with_name(path.name + ".tmp")
        save_file({"keys": np.ascontiguousarray(keys), "vectors": np.ascontiguousarray(vectors)},
                  str(tmp), metadata={"format": CACHE_FORMAT, "fingerprint": self.fingerprint,
                                      "dim": str(self.dim), "encoder": self.encoder_name})
        os.replace(tmp, path)
        self.dirty = False
        return path


@dataclass(slots=True)
class EncodeResult:
    vectors: np.ndarray  # float32 [N, dim], aligned with the input texts
    n_cached: int  # read from the cache
    n_encoded: int  # not found in the cache (encoded; duplicate texts encoded once)
    seconds: float  # encoder time only

    @property
    def items_per_s(self) -> float:
        return self.n_encoded / self.seconds if self.seconds > 0 else float("nan")


def encode_items(encoder: TextEncoder, texts: Sequence[str], cache_path: str | Path | None = None,
                 batch_size: int = 64, progress: bool = False,
                 cache: TextVectorCache | None = None) -> EncodeResult:
    """Vectors of ``texts`` (one per item), encoding only texts missing from the cache.

    ``cache_path``: a cache file (read if present, rewritten when something new was
    encoded); ``None`` and no ``cache``: no caching. Identical texts are encoded once.
    """
    if cache is None and cache_path is not None:
        cache = TextVectorCache(cache_path, encoder.fingerprint, encoder.dim, encoder.name)
    keys = [text_key(encoder.fingerprint, t) for t in texts]
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    todo: dict[bytes, list[int]] = {}
    n_cached = 0
    for i, k in enumerate(keys):
        v = cache.get(k) if cache is not None else None
        if v is not None:
            out[i] = v
            n_cached += 1
        else:
            todo.setdefault(k, []).append(i)
    seconds = 0.0
    if todo:
        first = [rows[0] for rows in todo.values()]
        t0 = time.perf_counter()
        vec = np.asarray(encoder.encode([texts[i] for i in first], batch_size=batch_size,
                                        progress=progress), dtype=np.float32)
        seconds = time.perf_counter() - t0
        if vec.shape != (len(first), encoder.dim):
            raise TextCacheError(f"encoder returned shape {vec.shape}, expected {(len(first), encoder.dim)}")
        for (k, rows), v in zip(todo.items(), vec, strict=True):
            out[rows] = v
            if cache is not None:
                cache.put(k, v)
    if cache is not None and cache.path is not None and cache.dirty:
        cache.save()
    return EncodeResult(out, n_cached, len(texts) - n_cached, seconds)
