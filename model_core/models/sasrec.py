"""SASRec: causal self-attention over the item sequence (Kang & McAuley, 2018).

Transformer blocks (``layers`` blocks, ``heads`` heads, ``dropout`` on the residual branches
and the input, ``attn_dropout`` on attention weights), learned positions counted from the
start of the (last ``max_len``) events, tied output embeddings. Two block shapes
(``block``):

- ``"prenorm"`` (default): pre-layer-norm blocks, ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``;
- ``"sasrec"``: the block of the SASRec paper and its PyTorch port (used by Klenitskiy &
  Vasilev's SASRec+): the query is layer-normed, keys and values are not,
  ``x = LN(x) + Attn(q=LN(x), k=x, v=x)``, then ``x = LN(x)`` and ``x = x + FFN(x)``; no
  dropout on the attention output (only ``attn_dropout`` on its weights).

The point-wise feed-forward network is ``ffn_mult * dim`` wide (default 4; the paper: 1)
with ``act`` (``"gelu"`` default, or the paper's ``"relu"``), dropout after its first layer
(and, in the ``"sasrec"`` shape, after its second). Train it with full cross-entropy
(``loss="ce"``, "SASRec+" of Klenitskiy & Vasilev 2023), sampled cross-entropy with many
shared negatives (``"sampled"``, ``negatives``), or gBCE (``"gbce"``, Petrov & Macdonald
2023, ``gbce_t`` calibration).

``transitions=True`` adds a counted last-item transition term to the scores,
``w * log(1 + count(last item -> j))`` (:mod:`model_core.models.transitions`, a count/neural
hybrid): the table is counted from the training sequences, the network trains alone, and
``w`` is chosen on the validation part after training: on small logs SASRec learns each
item's successors from a few dozen examples, which the Markov chain's counts use at once.

``loss_dtype="bfloat16"`` computes the ``ce`` and ``sampled`` (without ``in_batch`` or
``logq``) losses' big score matrix ``[positions, candidates]`` and its softmax in bfloat16 (weights, the
positive's score and the loss stay float32): on a CPU with AMX or on a GPU the scores'
matrix products are several times faster, at about 1% relative error in the gradients
(:class:`_LogSumExpBF16`). Evaluation always scores in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model_core.hparams import declared
from model_core.models.base import NegativeSampler, NeuralRecommender, SequenceModule
from model_core.models.transitions import TransitionTerm

BLOCKS = ("prenorm", "sasrec")
ACTIVATIONS = ("gelu", "relu")
LOSS_DTYPES = ("float32", "bfloat16")


class _LogSumExpBF16(torch.autograd.Function):
    """``logsumexp(h @ w.T, -1)`` [N] with the product and softmax in bfloat16.

    ``h`` [N, D] and ``w`` [S, D] are float32; ``hit_rows``/``hit_cols`` (or None) name
    entries of the score matrix to leave out (a sampled negative equal to the row's target).
    The softmax kept for the backward pass is bfloat16 too; gradients come back float32.
    """

    @staticmethod
    def forward(ctx, h, w, hit_rows, hit_cols):
        hb, wb = h.to(torch.bfloat16), w.to(torch.bfloat16)
        s = hb @ wb.t()  # [N, S]
        if hit_rows is not None and hit_rows.numel():
            s[hit_rows, hit_cols] = float("-inf")
        p = torch.softmax(s, -1)
        # lse = max + log(sum exp(s - max)) = max - log(softmax at the arg-max)
        lse = s.amax(-1).float() - torch.log(p.amax(-1).float())
        ctx.save_for_backward(hb, wb, p)
        return lse

    @staticmethod
    def backward(ctx, g):
        hb, wb, p = ctx.saved_tensors
        gs = p * g.to(torch.bfloat16).view(-1, 1)  # d lse / d s = softmax
        dh = (gs @ wb).float() if ctx.needs_input_grad[0] else None
        dw = (gs.t() @ hb).float() if ctx.needs_input_grad[1] else None
        return dh, dw, None, None


def _hits(neg: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) with ``neg[cols] == y[rows]``: every sampled negative equal to a target."""
    srt, order = torch.sort(neg)
    lo = torch.searchsorted(srt, y)
    hi = torch.searchsorted(srt, y, right=True)
    cnt = hi - lo  # [N] copies of each row's target among the negatives
    rows = torch.repeat_interleave(torch.arange(len(y), device=y.device), cnt)
    start = torch.repeat_interleave(lo - torch.cumsum(cnt, 0) + cnt, cnt)
    cols = order[start + torch.arange(len(rows), device=y.device)]
    return rows, cols


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float,
                 block: str = "prenorm", ffn_mult: int = 4, act: str = "gelu") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
        if ffn_mult < 1:
            raise ValueError(f"ffn_mult must be >= 1, got {ffn_mult}")
        self.heads = heads
        self.block = block
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        width = ffn_mult * dim
        layers = [nn.Linear(dim, width), nn.GELU() if act == "gelu" else nn.ReLU(),
                  nn.Dropout(dropout), nn.Linear(width, dim)]
        if block == "sasrec":
            layers.append(nn.Dropout(dropout))
        self.ff = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.p_attn = attn_dropout

    def _attend(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        b, n, d = q_in.shape
        hd = d // self.heads
        w, bias = self.qkv.weight, self.qkv.bias
        if q_in is kv_in:
            q, k, v = self.qkv(q_in).view(b, n, 3, self.heads, hd).unbind(2)
        else:  # query from one input, keys and values from another (same projections)
            q = F.linear(q_in, w[:d], bias[:d]).view(b, n, self.heads, hd)
            k, v = F.linear(kv_in, w[d:], bias[d:]).view(b, n, 2, self.heads, hd).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
            dropout_p=self.p_attn if self.training else 0.0)  # [B, heads, L, d/heads]
        return self.out(a.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, dim] -> [B, L, dim]
        if self.block == "sasrec":
            q = self.ln1(x)  # as the paper's code: dropout on attention weights only here
            x = q + self._attend(q, x)
            x = self.ln2(x)
            return x + self.ff(x)
        h = self.ln1(x)
        x = x + self.drop(self._attend(h, h))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRecModule(SequenceModule):
    takes_max_len = True

    def __init__(self, n_items: int, dim: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2, attn_dropout: float = 0.0, max_len: int = 50,
                 block: str = "prenorm", ffn_mult: int = 4, act: str = "gelu",
                 loss_dtype: str = "float32", transitions: bool = False, **common) -> None:
        super().__init__(n_items, dim=dim, **common)
        if loss_dtype not in LOSS_DTYPES:
            raise ValueError(f"unknown loss_dtype {loss_dtype!r}; choose one of "
                             f"{', '.join(LOSS_DTYPES)}")
        if loss_dtype != "float32" and (self.loss_type == "gbce" or self.in_batch or self.logq):
            raise ValueError("loss_dtype bfloat16 applies to the ce and sampled losses "
                             "without in_batch negatives or logq correction")
        self.loss_dtype = loss_dtype
        if transitions:
            self.transitions = TransitionTerm(n_items)
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.in_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout, attn_dropout, block,
                                           int(ffn_mult), act) for _ in range(layers))
        self.final_ln = nn.LayerNorm(dim)
        self.config.update(layers=layers, heads=heads, dropout=dropout, attn_dropout=attn_dropout,
                           block=block, ffn_mult=int(ffn_mult), act=act, loss_dtype=loss_dtype,
                           transitions=bool(transitions))

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


    def item_loss(self, h: torch.Tensor, y: torch.Tensor,
                  sampler: NegativeSampler | None) -> torch.Tensor:
        """As :meth:`SequenceModule.item_loss`; with ``loss_dtype="bfloat16"`` the score
        matrix and its softmax in bfloat16 (:class:`_LogSumExpBF16`)."""
        if self.loss_dtype == "float32":
            return super().item_loss(h, y, sampler)
        s_pos = (h * self.item_emb.rows(y)).sum(-1)  # [N] float32
        if self.loss_type == "ce" or sampler is None:
            lse = _LogSumExpBF16.apply(h, self.item_emb.item_matrix()[1:], None, None)
            return (lse - s_pos).mean()
        neg = sampler.sample(self.negatives)  # [S]
        hr, hc = _hits(neg, y) if self.negatives * 20 > self.n_items else (None, None)
        lse = _LogSumExpBF16.apply(h, self.item_emb.rows(neg), hr, hc)
        return (torch.logaddexp(s_pos, lse) - s_pos).mean()


class SASRec(NeuralRecommender):
    name = "sasrec"
    module_cls = SASRecModule
    hparams = declared("sasrec")  # model_core.hparams.MODEL_HPARAMS
