"""Text vectors into the sequence models' item tables (GRU4Rec, SASRec).

The models' :class:`~model_core.models.item_embedding.ItemEmbedding` has three modes: ``id``
(a trained vector per item), ``text`` (a trained projection of a frozen text vector) and
``fused`` (their sum). This module brings the text side:

- :func:`text_table`: one text vector per vocabulary index (row 0 and items without
  metadata stay zero), encoded through the cache;
- :func:`grow_items`: add items to a *trained* model — vocabulary, text-vector buffer and
  (for ``fused``) zero ID rows — so an item known only by its metadata is represented by its
  text alone and can be scored and recommended without retraining;
- :func:`add_metadata_items`: encode + grow (or refresh the text of known items) in one
  call, used after training and by the stream's item encoder.

Growing keeps every checkpoint invariant: ``vocab.json``, the weights' item rows and
``n_items`` all grow together, so a grown model saves and loads like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_core.exceptions import ModelCoreError
from model_core.learn.items import grow_counting
from model_core.text.cache import EncodeResult, TextVectorCache, encode_items
from model_core.text.encoder import TextEncoder
from model_core.vocab import ItemVocab

__all__ = ["ID_INITS", "TEXT_MODES", "GrowResult", "add_metadata_items", "grow_items",
           "impute_id_rows", "item_embedding_of", "set_text_table", "text_table"]

TEXT_MODES = ("id", "text", "fused")


class TextFusionError(ModelCoreError):
    """A model cannot take text vectors (wrong mode or shape)."""


def item_embedding_of(model):
    """The :class:`ItemEmbedding` of a neural recommender (or of its module)."""
    module = getattr(model, "module", model)
    emb = getattr(module, "item_emb", None)
    if emb is None:
        raise TextFusionError(f"{getattr(model, 'name', type(model).__name__)} has no item "
                              "embedding: text item vectors apply to gru4rec and sasrec only")
    return emb


def text_table(vocab: ItemVocab, texts: Mapping[str, str], encoder: TextEncoder,
               cache_path: str | Path | None = None, batch_size: int = 64,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray, EncodeResult]:
    """Text vectors aligned with ``vocab``: ``(vectors [len(vocab), dim], has_text [len(vocab)],
    encode result)``. Items of the vocabulary without metadata get a zero row."""
    idx = [i for i in range(1, len(vocab)) if vocab.item_id(i) in texts]
    res = encode_items(encoder, [texts[vocab.item_id(i)] for i in idx], cache_path,
                       batch_size=batch_size, progress=progress)
    table = np.zeros((len(vocab), encoder.dim), dtype=np.float32)
    has = np.zeros(len(vocab), dtype=bool)
    if idx:
        table[idx] = res.vectors
        has[idx] = True
    return table, has, res


def set_text_table(model, table: np.ndarray) -> None:
    """Install a full ``[len(vocab), text_dim]`` table into a text/fused model."""
    emb = item_embedding_of(model)
    if emb.mode == "id":
        raise TextFusionError("this model was built in 'id' mode; build it with "
                              "item_mode='text' or 'fused' (--text-mode) to use text vectors")
    emb.set_text_vectors(torch.as_tensor(np.asarray(table, dtype=np.float32)))


@dataclass(slots=True)
class GrowResult:
    added: list[str]  # new item ids, in the order of their new indices
    updated: list[str]  # known ids whose text vector was replaced
    first_index: int  # vocabulary index of added[0] (when any)
    n_cached: int = 0
    n_encoded: int = 0
    encode_seconds: float = 0.0


def _grown_embedding(old: nn.Embedding, n_new: int) -> nn.Embedding:
    w = old.weight
    new = nn.Embedding(w.shape[0] + n_new, w.shape[1], padding_idx=old.padding_idx,
                       device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight[: w.shape[0]].copy_(w)
        new.weight[w.shape[0]:].zero_()  # no ID signal: the text part alone represents them
    new.weight.requires_grad_(w.requires_grad)
    return new


ID_INITS = ("zero", "knn")


def impute_id_rows(model, indices: Sequence[int] | np.ndarray, k: int = 10,
                   donors: np.ndarray | None = None) -> None:
    """``fused`` models: give items ``indices`` the mean ID vector of their ``k`` nearest
    items by text (cosine), among ``donors`` (default: every item with a non-zero ID row).

    A new item's fused vector is then "ID of look-alike items + its own text" instead of
    text alone, which sits on the same scale as trained items' vectors.
    """
    emb = item_embedding_of(model)
    if emb.id_emb is None or len(indices) == 0:
        return
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=emb.text_vectors.device)
    w = emb.id_emb.weight
    with torch.no_grad():
        if donors is None:
            ok = w.abs().sum(1) > 0
            ok[0] = False
            ok[idx] = False
            donors_t = torch.nonzero(ok).squeeze(1)
        else:
            donors_t = torch.as_tensor(np.asarray(donors, dtype=np.int64), device=w.device)
        if len(donors_t) == 0:
            return
        tv = torch.nn.functional.normalize(emb.text_vectors, dim=1)
        sim = tv[idx] @ tv[donors_t].t()  # [n, D]
        kk = min(k, len(donors_t))
        top = sim.topk(kk, dim=1).indices  # [n, kk]
        w[idx] = w[donors_t[top]].mean(1)


def grow_items(model, item_ids: Sequence[str], vectors: np.ndarray,
               id_init: str = "zero", k: int = 10) -> GrowResult:
    """Make ``item_ids`` recommendable by ``model`` from their text ``vectors`` [n, text_dim].

    Ids already in the vocabulary get their text vector replaced; new ids are appended to
    the vocabulary (indices ``len(vocab)..``) with a zero category and, in ``fused`` mode,
    ``id_init="zero"``: a zero ID vector (text-only representation) or ``"knn"``: the mean
    ID vector of the ``k`` text-nearest known items (:func:`impute_id_rows`). Call it on the thread that
    scores with the model, between batches (it replaces tensors in place of the old ones).
    """
    emb = item_embedding_of(model)
    if emb.mode == "id":
        raise TextFusionError("an 'id'-mode model cannot represent items from their text; "
                              "train with --text-mode text or fused")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape != (len(item_ids), emb.text_dim):
        raise TextFusionError(f"text vectors must have shape {(len(item_ids), emb.text_dim)}, "
                              f"got {vectors.shape}")
    vocab: ItemVocab = model.vocab
    module = getattr(model, "module", model)
    buf = emb.text_vectors
    vec_t = torch.as_tensor(vectors, dtype=buf.dtype, device=buf.device)
    added, updated, add_rows = [], [], []
    pending: dict[str, int] = {}
    for row, item_id in enumerate(item_ids):
        item_id = str(item_id)
        idx = vocab.index(item_id)
        if idx:
            with torch.no_grad():
                buf[idx] = vec_t[row]
            updated.append(item_id)
        elif item_id in pending:  # the same new id twice in one call: last text wins
            add_rows[pending[item_id]] = row
        else:
            pending[item_id] = len(added)
            added.append(item_id)
            add_rows.append(row)
    first = len(vocab)
    if added:
        n_new = len(added)
        # tensors first, vocabulary last: every index the vocabulary hands out has a row
        emb.text_vectors = torch.cat([buf, vec_t[add_rows]], 0)
        if emb.id_emb is not None:
            emb.id_emb = _grown_embedding(emb.id_emb, n_new)
        inputs = getattr(module, "inputs", None)
        cats = getattr(inputs, "item_categories", None) if inputs is not None else None
        if isinstance(cats, torch.Tensor):
            inputs.item_categories = torch.cat([cats, cats.new_zeros(n_new)])
        # GRU4Rec's output item bias and logQ counts: one slot per new item, as the learner
        # grows them (model_core.learn.items): bias 0, log count 0 (a count of one)
        bias = getattr(module, "out_bias", None)
        if isinstance(bias, torch.Tensor):
            module.out_bias = nn.Parameter(torch.cat([bias.detach(),
                                                  bias.new_zeros(n_new)]))
        log_count = getattr(module, "log_count", None)
        if isinstance(log_count, torch.Tensor):
            module.log_count = torch.cat([log_count, log_count.new_zeros(n_new)])
        # the training counts saved with the weights (beyond accuracy): new items count 0
        if getattr(model, "item_counts", None) is not None:
            grow_counting(model, len(model.item_counts) + n_new)
        emb.n_items += n_new
        if hasattr(module, "n_items"):
            module.n_items = emb.n_items
        if id_init == "knn" and emb.id_emb is not None:
            impute_id_rows(model, np.arange(first, first + n_new), k)
        elif id_init not in ID_INITS:
            raise TextFusionError(f"unknown id_init {id_init!r}; choose one of {ID_INITS}")
        for item_id in added:
            vocab.add(item_id)
        if emb.n_items != vocab.n_items:
            raise TextFusionError(f"model rows ({emb.n_items}) and vocabulary "
                                  f"({vocab.n_items}) disagree after growing")
    return GrowResult(added, updated, first)


def add_metadata_items(model, texts: Mapping[str, str], encoder: TextEncoder,
                       cache: TextVectorCache | str | Path | None = None,
                       only_new: bool = False, batch_size: int = 64,
                       progress: bool = False, id_init: str = "zero") -> GrowResult:
    """Encode ``texts`` (id -> description) and :func:`grow_items` the model with them.

    ``only_new``: leave items already in the vocabulary as they are (after training, where
    their vectors were installed from the same metadata). ``cache``: a
    :class:`TextVectorCache` or a cache file path.
    """
    ids = [i for i in texts if not (only_new and i in model.vocab)]
    if not ids:
        return GrowResult([], [], len(model.vocab))
    if isinstance(cache, (str, Path)):
        res = encode_items(encoder, [texts[i] for i in ids], cache, batch_size, progress)
    else:
        res = encode_items(encoder, [texts[i] for i in ids], None, batch_size, progress,
                           cache=cache)
    out = grow_items(model, ids, res.vectors, id_init=id_init)
    out.n_cached, out.n_encoded, out.encode_seconds = res.n_cached, res.n_encoded, res.seconds
    return out
