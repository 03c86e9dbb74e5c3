"""Text item vectors in a training run: read metadata once, encode through the cache,
hand vectors to :func:`model_core.train.train_model`, grow the trained model with the
items known only from their metadata.

    setup = TextSetup.create("ml-100k.item", "item_id", "movie_title,class,release_year",
                             mode="fused", cache_dir="runs/sasrec-text")
    cfg.update(setup.model_config())
    model, hist = train_model("sasrec", seqs, valid, cfg, vocab=vocab,
                              text_vectors=setup.vectors_for(vocab))
    setup.finish(model)        # adds metadata-only items; returns a summary for meta.json
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_core.text.cache import CACHE_FILE, TextVectorCache, encode_items
from model_core.text.encoder import TextEncoder, load_text_encoder
from model_core.text.fusion import TEXT_MODES, add_metadata_items
from model_core.text.items import ItemMetadata, read_item_metadata
from model_core.vocab import ItemVocab

__all__ = ["TextSetup"]


@dataclass
class TextSetup:
    mode: str
    metadata: ItemMetadata
    encoder: TextEncoder
    cache: TextVectorCache
    progress: bool = True
    texts: dict[str, str] = field(init=False)
    summary: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("text", "fused"):
            raise ValueError(f"text mode must be 'text' or 'fused' here, got {self.mode!r}")
        self.texts = self.metadata.as_dict()
        self.summary = {"mode": self.mode, "items_file": self.metadata.source,
                        "items_read": len(self.metadata), "bad_lines": self.metadata.n_bad,
                        "encoder": self.encoder.name, "encoder_fingerprint": self.encoder.fingerprint,
                        "text_dim": self.encoder.dim, "encoded": 0, "cached": 0,
                        "encode_seconds": 0.0}

    @classmethod
    def create(cls, items_path: str | Path, id_column: str = "item_id",
               text_columns: str | None = None, mode: str = "fused",
               cache_dir: str | Path | None = None, fmt: str = "auto", device: str = "auto",
               encoder: TextEncoder | None = None, progress: bool = True) -> TextSetup:
        if mode not in TEXT_MODES or mode == "id":
            raise ValueError(f"text mode must be 'text' or 'fused', got {mode!r}")
        meta = read_item_metadata(items_path, id_column, text_columns, fmt)
        if progress or meta.n_bad:
            print(meta.report(), file=sys.stderr)
        enc = encoder if encoder is not None else load_text_encoder(device=device)
        cache_path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
        cache = TextVectorCache(cache_path, enc.fingerprint, enc.dim, enc.name)
        return cls(mode, meta, enc, cache, progress)

    def model_config(self) -> dict:
        return {"item_mode": self.mode, "text_dim": self.encoder.dim}

    def vectors_for(self, vocab: ItemVocab) -> np.ndarray:
        """``[len(vocab), text_dim]`` vectors (zero rows for items without metadata)."""
        idx = [i for i in range(1, len(vocab)) if vocab.item_id(i) in self.texts]
        res = encode_items(self.encoder, [self.texts[vocab.item_id(i)] for i in idx], None,
                           progress=self.progress, cache=self.cache)
        table = np.zeros((len(vocab), self.encoder.dim), dtype=np.float32)
        if idx:
            table[idx] = res.vectors
        self._count(res.n_encoded, res.n_cached, res.seconds)
        self.summary["vocab_items_with_text"] = len(idx)
        self.summary["vocab_items_without_text"] = vocab.n_items - len(idx)
        if self.progress:
            print(f"text vectors: {len(idx)}/{vocab.n_items} training items have metadata "
                  f"({res.n_encoded} encoded, {res.n_cached} from the cache)", file=sys.stderr)
        return table

    def _count(self, encoded: int, cached: int, seconds: float) -> None:
        self.summary["encoded"] += encoded
        self.summary["cached"] += cached
        self.summary["encode_seconds"] = round(self.summary["encode_seconds"] + seconds, 3)

    def finish(self, model) -> dict:
        """Add the items that only the metadata knows (text-only rows); save the cache."""
        res = add_metadata_items(model, self.texts, self.encoder, self.cache, only_new=True,
                                 progress=self.progress)
        self._count(res.n_encoded, res.n_cached, res.encode_seconds)
        self.summary["metadata_only_items_added"] = len(res.added)
        if self.cache.path is not None and self.cache.dirty:
            self.cache.save()
        if self.progress:
            print(f"added {len(res.added)} metadata-only items (recommendable from their text); "
                  f"vocabulary now {model.vocab.n_items} items", file=sys.stderr)
        return dict(self.summary)
