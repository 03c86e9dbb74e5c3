"""SASRec: causal self-attention over the item sequence (Kang & McAuley, 2018).

Pre-layer-norm transformer blocks (``layers`` blocks, ``heads`` heads, ``dropout`` on the
residual branches and the input, ``attn_dropout`` on attention weights), learned
positions counted from the start of the (last ``max_len``) events, tied output embeddings.
Train it with full cross-entropy (``loss="ce"``, "SASRec+" of Klenitskiy & Vasilev 2023),
sampled cross-entropy with many shared negatives (``"sampled"``, ``negatives``), or
gBCE (``"gbce"``, Petrov & Macdonald 2023, ``gbce_t`` calibration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model_core.models.base import NeuralRecommender, SequenceModule


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)
        self.p_attn = attn_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, dim] -> [B, L, dim]
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
            dropout_p=self.p_attn if self.training else 0.0)  # [B, heads, L, d/heads]
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRecModule(SequenceModule):
    takes_max_len = True

    def __init__(self, n_items: int, dim: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2, attn_dropout: float = 0.0, max_len: int = 50,
                 **common) -> None:
        super().__init__(n_items, dim=dim, **common)
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.in_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout, attn_dropout) for _ in range(layers))
        self.final_ln = nn.LayerNorm(dim)
        self.config.update(layers=layers, heads=heads, dropout=dropout, attn_dropout=attn_dropout)

    def encode(self, item_seq, lengths, actions=None, gaps=None) -> torch.Tensor:
        n = item_seq.shape[1]
        pos = self.pos.weight[:n]  # [min(L, max_len), dim]
        if n > self.max_len:  # only padding lies beyond max_len (inputs keep the last max_len)
            pos = torch.cat([pos, pos.new_zeros(n - self.max_len, self.dim)])
        x = self.inputs(item_seq, actions, gaps) * (self.dim ** 0.5)  # [B, L, dim]
        x = x + pos.unsqueeze(0)
        x = self.in_drop(x)
        for blk in self.blocks:  # causal: position t sees 0..t only, padding sits after
            x = blk(x)
        return self.final_ln(x)  # [B, L, dim]


class SASRec(NeuralRecommender):
    name = "sasrec"
    module_cls = SASRecModule
