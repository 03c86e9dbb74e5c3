"""How an item (and its event's side features) becomes a vector.

:class:`ItemEmbedding` is the item representation shared by the input and the output
(scores are ``h @ item_matrix().T``). Its ``mode`` is the hook for content vectors:

- ``"id"``: a trained embedding per item index (index 0 = padding, kept at zero);
- ``"text"``: a frozen buffer of per-item text vectors ``[n_items + 1, text_dim]`` passed
  through a trained linear projection (items unseen in training still get a vector);
- ``"fused"``: the sum of both.

The text vectors are brought by the caller (:meth:`ItemEmbedding.set_text_vectors`, or the
``text_vectors`` constructor argument); they are a buffer, so they are saved in the checkpoint
with the weights and never trained.

:class:`InputEncoder` adds the event's side features to the item vector: action type,
item category (through an ``item -> category`` table fixed at training time) and the
time-gap bucket, summed with or concatenated to the item embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from model_core.models.data import N_GAP_BUCKETS
from schemas.actions import N_ACTIONS

EMBEDDING_MODES = ("id", "text", "fused")
FEATURE_COMBINE = ("sum", "concat")
SIDE_FEATURES = ("action", "category", "gap")


class ItemEmbedding(nn.Module):
    def __init__(self, n_items: int, dim: int, mode: str = "id", text_dim: int = 0,
                 text_vectors: torch.Tensor | None = None, sparse: bool = False) -> None:
        super().__init__()
        if mode not in EMBEDDING_MODES:
            raise ValueError(f"unknown item embedding mode {mode!r}; choose one of {EMBEDDING_MODES}")
        if text_vectors is not None:
            text_dim = int(text_vectors.shape[1])
        if mode != "id" and text_dim <= 0:
            raise ValueError(f"item embedding mode {mode!r} needs text vectors (text_dim > 0)")
        self.n_items, self.dim, self.mode, self.text_dim = n_items, dim, mode, text_dim
        self.id_emb = (nn.Embedding(n_items + 1, dim, padding_idx=0, sparse=sparse)
                       if mode != "text" else None)
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=dim ** -0.5)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
        if mode != "id":
            self.register_buffer("text_vectors", torch.zeros(n_items + 1, text_dim))
            self.text_proj = nn.Linear(text_dim, dim, bias=False)
            if text_vectors is not None:
                self.set_text_vectors(text_vectors)
        else:
            self.text_proj = None

    @property
    def sparse_weight(self) -> torch.Tensor | None:
        """The id-embedding weight when it gets sparse gradients (train it with SparseAdam)."""
        return self.id_emb.weight if self.id_emb is not None and self.id_emb.sparse else None

    def set_text_vectors(self, vectors: torch.Tensor) -> None:
        """Install frozen per-item text vectors ``[n_items + 1, text_dim]`` (row 0 = padding)."""
        if self.mode == "id":
            raise ValueError("this item embedding is in 'id' mode; build it with mode='text' or 'fused'")
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if tuple(vectors.shape) != (self.n_items + 1, self.text_dim):
            raise ValueError(f"text vectors must have shape {(self.n_items + 1, self.text_dim)}, "
                             f"got {tuple(vectors.shape)}")
        with torch.no_grad():
            self.text_vectors.copy_(vectors)
            self.text_vectors[0].zero_()

    def item_matrix(self) -> torch.Tensor:
        """[n_items + 1, dim] vectors of every item (row 0 is zero for 'id' mode)."""
        if self.mode == "id":
            return self.id_emb.weight
        text = self.text_proj(self.text_vectors)
        return text if self.mode == "text" else self.id_emb.weight + text

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Vectors of the items in ``idx`` (any shape) -> ``idx.shape + (dim,)``."""
        if self.mode == "id":
            return self.id_emb(idx)
        text = self.text_proj(self.text_vectors[idx])
        return text if self.mode == "text" else self.id_emb(idx) + text

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows(idx)


class InputEncoder(nn.Module):
    """Item embedding plus side features for each input position.

    ``features``: subset of ``("action", "category", "gap")``. ``combine``: ``"sum"`` adds
    the feature embeddings to the item vector; ``"concat"`` concatenates them and projects
    back to ``dim``. The category of each item is looked up in a buffer ``item_categories``
    ``[n_items + 1]`` (0 = unknown category), saved with the weights.
    """

    def __init__(self, items: ItemEmbedding, features: tuple[str, ...] = (), combine: str = "sum",
                 n_categories: int = 0) -> None:
        super().__init__()
        bad = [f for f in features if f not in SIDE_FEATURES]
        if bad:
            raise ValueError(f"unknown side feature(s) {bad}; choose from {SIDE_FEATURES}")
        if combine not in FEATURE_COMBINE:
            raise ValueError(f"unknown feature combine {combine!r}; choose one of {FEATURE_COMBINE}")
        self.items = items
        self.features = tuple(features)
        self.combine = combine
        dim = items.dim
        self.action_emb = nn.Embedding(N_ACTIONS + 1, dim, padding_idx=0) if "action" in features else None
        self.use_category = "category" in features and n_categories > 0
        if self.use_category:
            self.category_emb = nn.Embedding(n_categories + 1, dim, padding_idx=0)
            self.register_buffer("item_categories", torch.zeros(items.n_items + 1, dtype=torch.long))
        else:
            self.category_emb = None
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, dim, padding_idx=0) if "gap" in features else None
        n_parts = 1 + sum(e is not None for e in (self.action_emb, self.category_emb, self.gap_emb))
        self.concat_proj = nn.Linear(dim * n_parts, dim) if combine == "concat" and n_parts > 1 else None
        for e in (self.action_emb, self.category_emb, self.gap_emb):
            if e is not None:
                nn.init.normal_(e.weight, std=0.02)
                with torch.no_grad():
                    e.weight[0].zero_()

    @property
    def uses_actions(self) -> bool:
        return self.action_emb is not None

    @property
    def uses_gaps(self) -> bool:
        return self.gap_emb is not None

    def set_item_categories(self, table) -> None:
        if not self.use_category:
            return
        t = torch.as_tensor(table, dtype=torch.long)
        n = min(len(t), self.item_categories.shape[0])
        with torch.no_grad():
            self.item_categories.zero_()
            self.item_categories[:n] = t[:n].clamp(0, self.category_emb.num_embeddings - 1)

    def forward(self, item_seq: torch.Tensor, actions: torch.Tensor | None = None,
                gaps: torch.Tensor | None = None) -> torch.Tensor:
        """item_seq [B, L] (+ actions, gaps [B, L], 0 = none) -> [B, L, dim]."""
        parts = [self.items(item_seq)]
        if self.action_emb is not None:
            parts.append(self.action_emb(actions if actions is not None else torch.zeros_like(item_seq)))
        if self.category_emb is not None:
            parts.append(self.category_emb(self.item_categories[item_seq]))
        if self.gap_emb is not None:
            parts.append(self.gap_emb(gaps if gaps is not None else torch.zeros_like(item_seq)))
        if len(parts) == 1:
            return parts[0]
        if self.concat_proj is not None:
            return self.concat_proj(torch.cat(parts, dim=-1))
        return torch.stack(parts, 0).sum(0)
