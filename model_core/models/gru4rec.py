"""GRU4Rec: a recurrent network over the item sequence (Hidasi et al., 2016; 2018).

GRU or LSTM cell (``cell``), ``layers`` stacked layers of ``hidden`` units, the top layer
projected to the item-embedding size when ``hidden != dim`` (tied output embeddings).
Losses from :class:`~model_core.models.base.SequenceModule`: full cross-entropy (``ce``),
sampled softmax (``sampled``: shared popularity/uniform negatives, ``in_batch`` adds the
batch's other targets as negatives, ``logq`` correction), or ``gbce``.

Streaming: :meth:`GRU4RecModule.step` advances a cached state by one event, and
:meth:`GRU4RecModule.output_of_state` turns it into the vector scored against the catalogue,
so a new event costs one cell step instead of a pass over the whole sequence.
The state of one user is ``layers * hidden`` floats (``2 *`` that for LSTM: h and c).
"""

from __future__ import annotations

import torch
from torch import nn

from model_core.models.base import NeuralRecommender, SequenceModule, StatefulMixin

CELLS = ("gru", "lstm")


class GRU4RecModule(SequenceModule):
    def __init__(self, n_items: int, dim: int = 64, hidden: int | None = None, layers: int = 1,
                 cell: str = "gru", dropout: float = 0.0, embed_dropout: float = 0.0,
                 **common) -> None:
        super().__init__(n_items, dim=dim, **common)
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
        hidden = int(hidden or dim)
        self.hidden, self.layers, self.cell = hidden, layers, cell
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(dim, hidden, layers, batch_first=True,
                       dropout=dropout if layers > 1 else 0.0)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, dim) if hidden != dim else nn.Identity()
        self.config.update(hidden=hidden, layers=layers, cell=cell, dropout=dropout,
                           embed_dropout=embed_dropout)

    def encode(self, item_seq, lengths, actions=None, gaps=None) -> torch.Tensor:
        x = self.embed_drop(self.inputs(item_seq, actions, gaps))  # [B, L, dim]
        out, _ = self.rnn(x)  # [B, L, hidden]; causal, so right padding never leaks back
        return self.proj(self.drop(out))  # [B, L, dim]

    # ---------------------------------------------------------------- streaming
    @property
    def state_dim(self) -> int:
        return self.layers * self.hidden * (2 if self.cell == "lstm" else 1)

    def _unpack(self, state: torch.Tensor):
        b = state.shape[0]
        s = state.view(b, self.layers, -1).transpose(0, 1).contiguous()  # [layers, B, k*hidden]
        if self.cell == "lstm":
            return (s[..., : self.hidden].contiguous(), s[..., self.hidden:].contiguous())
        return s

    def _pack(self, hs) -> torch.Tensor:
        s = torch.cat(hs, dim=-1) if self.cell == "lstm" else hs  # [layers, B, k*hidden]
        return s.transpose(0, 1).reshape(s.shape[1], -1)

    def step(self, state: torch.Tensor, items: torch.Tensor, actions=None, gaps=None) -> torch.Tensor:
        """state [B, state_dim], items [B] (+ actions, gaps [B], id + 1 / bucket) -> new state."""
        x = self.inputs(items.view(-1, 1),
                        None if actions is None else actions.view(-1, 1),
                        None if gaps is None else gaps.view(-1, 1))  # [B, 1, dim]
        _, hs = self.rnn(x, self._unpack(state))
        return self._pack(hs)

    def output_of_state(self, state: torch.Tensor) -> torch.Tensor:
        """[B, state_dim] -> [B, dim]: the vector that :meth:`score_all` takes."""
        top = state.view(state.shape[0], self.layers, -1)[:, -1, : self.hidden]
        return self.proj(top)


class GRU4Rec(StatefulMixin, NeuralRecommender):
    name = "gru4rec"
    module_cls = GRU4RecModule
