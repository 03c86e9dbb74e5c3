"""GRU4Rec: a recurrent network over the item sequence (Hidasi et al., 2016; 2018).

GRU or LSTM cell (``cell``), ``layers`` stacked layers of ``hidden`` units, the top layer
projected to the item-embedding size when ``hidden != dim`` (tied output embeddings).
Losses from :class:`~model_core.models.base.SequenceModule`: full cross-entropy (``ce``),
sampled softmax (``sampled``: shared popularity/uniform negatives, ``in_batch`` adds the
batch's other targets as negatives, ``logq`` correction), or ``gbce``.

GRU4Rec's own training recipe (Hidasi & Karatzoglou, 2018) is available as options:
``bias`` (an output item bias), ``final_act`` (tanh / elu on the output state),
``init="uniform"`` (its +-sqrt(6 / (fan_in + fan_out)) initialisation), its logQ correction of
in-batch candidates by item count (:meth:`GRU4RecModule.set_item_counts`, set by the trainer),
and session-parallel mini-batches with one step of back-propagation
(:meth:`GRU4RecModule.parallel_loss`, ``batch_order="parallel"`` in
:func:`model_core.train.train_model`), trained with Adagrad with momentum
(:class:`model_core.models.optim.AdagradM`, ``optimizer="adagrad"``).

Streaming: :meth:`GRU4RecModule.step` advances a cached state by one event, and
:meth:`GRU4RecModule.output_of_state` turns it into the vector scored against the catalogue,
so a new event costs one cell step instead of a pass over the whole sequence.
The state of one user is ``layers * hidden`` floats (``2 *`` that for LSTM: h and c).
"""

from __future__ import annotations

import torch
from torch import nn

from model_core.hparams import declared
from model_core.models.base import (
    NEG_INF,
    NegativeSampler,
    NeuralRecommender,
    SequenceModule,
    StatefulMixin,
)

CELLS = ("gru", "lstm")
FINAL_ACTS = ("none", "tanh", "elu")
INITS = ("default", "uniform")


class GRU4RecModule(SequenceModule):
    def __init__(self, n_items: int, dim: int = 64, hidden: int | None = None, layers: int = 1,
                 cell: str = "gru", dropout: float = 0.0, embed_dropout: float = 0.0,
                 bias: bool = False, final_act: str = "none", init: str = "default",
                 **common) -> None:
        super().__init__(n_items, dim=dim, **common)
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
        if final_act not in FINAL_ACTS:
            raise ValueError(f"unknown final activation {final_act!r}; "
                             f"choose one of {', '.join(FINAL_ACTS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        if bias and self.loss_type == "gbce":
            raise ValueError("the output item bias works with the ce and sampled losses, not gbce")
        hidden = int(hidden or dim)
        self.hidden, self.layers, self.cell = hidden, layers, cell
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(dim, hidden, layers, batch_first=True,
                       dropout=dropout if layers > 1 else 0.0)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, dim) if hidden != dim else nn.Identity()
        self.act = {"none": nn.Identity(), "tanh": nn.Tanh(), "elu": nn.ELU()}[final_act]
        # output item bias (GRU4Rec's By): score = h . e_item + b_item
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1)) if bias else None
        # log training counts per item (set_item_counts): GRU4Rec's logQ correction of
        # in-batch candidates (drawn by count) apart from sampled ones (drawn by count**alpha)
        self.log_count: torch.Tensor | None = None
        self.config.update(hidden=hidden, layers=layers, cell=cell, dropout=dropout,
                           embed_dropout=embed_dropout, bias=bool(bias), final_act=final_act,
                           init=init)
        if init == "uniform":
            self._uniform_init()

    @torch.no_grad()
    def _uniform_init(self) -> None:
        """GRU4Rec's initialisation: each [fan_out, fan_in] block (the item matrix, every gate's
        input and recurrent weights) uniform in +-sqrt(6 / (fan_in + fan_out)); biases zero."""
        def fill(w):
            a = (6.0 / (w.shape[0] + w.shape[1])) ** 0.5
            w.uniform_(-a, a)

        emb = self.item_emb.id_emb
        if emb is not None:
            fill(emb.weight)
            emb.weight[0].zero_()
        gates = 4 if self.cell == "lstm" else 3
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight"):
                for block in p.chunk(gates, 0):
                    fill(block)
            else:
                p.zero_()

    def encode(self, item_seq, lengths, actions=None, gaps=None) -> torch.Tensor:
        x = self.embed_drop(self.inputs(item_seq, actions, gaps))  # [B, L, dim]
        out, _ = self.rnn(x)  # [B, L, hidden]; causal, so right padding never leaks back
        return self.act(self.proj(self.drop(out)))  # [B, L, dim]

    # ---------------------------------------------------------------- output bias
    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        sc = super().score_all(h)
        return sc if self.out_bias is None else sc + self.out_bias

    def score_items(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        sc = super().score_items(h, idx)
        return sc if self.out_bias is None else sc + self.out_bias[idx]

    def item_loss(self, h: torch.Tensor, y: torch.Tensor,
                  sampler: NegativeSampler | None) -> torch.Tensor:
        """As :meth:`SequenceModule.item_loss`, plus the item bias when ``bias`` is set, and
        with item counts set (:meth:`set_item_counts`) GRU4Rec's logQ correction: in-batch
        candidates by ``log count``, sampled ones by ``sample_alpha * log count``."""
        own = self.out_bias is not None or (self.log_count is not None and self.in_batch)
        if not own or self.loss_type == "ce" or sampler is None:
            return super().item_loss(h, y, sampler)  # score_all carries the bias for ce
        b = self.out_bias if self.out_bias is not None else h.new_zeros(self.n_items + 1)
        neg = sampler.sample(self.negatives)  # [S]
        lq = lq_bat = None
        if self.logq and self.log_count is not None:
            lq, lq_bat = self.sample_alpha * self.log_count, self.log_count
        elif self.logq:
            lq = lq_bat = sampler.log_q
        s_neg = h @ self.item_emb.rows(neg).t() + b[neg]  # [N, S]
        if lq is not None:
            s_neg = s_neg - lq[neg]
        if self.negatives * 20 > self.n_items:  # small catalogue: mask sampled hits
            s_neg = s_neg.masked_fill(neg.view(1, -1) == y.view(-1, 1), NEG_INF)
        if not self.in_batch:
            s_pos = (h * self.item_emb.rows(y)).sum(-1) + b[y]
            if lq is not None:
                s_pos = s_pos - lq[y]
            return (torch.logaddexp(s_pos, torch.logsumexp(s_neg, -1)) - s_pos).mean()
        n = h.shape[0]
        s_bat = h @ self.item_emb.rows(y).t() + b[y]  # [N, N]: row i's label is column i
        if lq_bat is not None:
            s_bat = s_bat - lq_bat[y]
        eye = torch.arange(n, device=h.device)
        same = y.view(1, -1) == y.view(-1, 1)
        same[eye, eye] = False
        s_bat = s_bat.masked_fill(same, NEG_INF)
        lse = torch.logaddexp(torch.logsumexp(s_bat, -1), torch.logsumexp(s_neg, -1))
        return (lse - s_bat[eye, eye]).mean()

    def set_item_counts(self, counts) -> None:
        """Training counts per item index ``[n_items + 1]`` for the logQ correction."""
        c = torch.as_tensor(counts, dtype=torch.float32, device=self.item_emb.item_matrix().device)
        self.log_count = torch.log(c.clamp_min(1.0))

    # ---------------------------------------------------------------- session-parallel
    def parallel_loss(self, state: torch.Tensor | None, inputs: torch.Tensor,
                      targets: torch.Tensor, prev: torch.Tensor,
                      sampler: NegativeSampler | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of session-parallel training (truncated back-propagation of one step).

        ``state`` [B', state_dim] from the previous step (None at the start), ``inputs`` /
        ``targets`` [B], ``prev`` [B] (row of ``state`` each lane continues, -1 = zero state,
        see :func:`~model_core.models.data.session_parallel_steps`). Returns the mean
        next-item loss and the new state, detached. As in GRU4Rec, a one-layer GRU carries
        its hidden state with dropout applied.
        """
        n = inputs.shape[0]
        st = torch.zeros(n, self.state_dim, device=inputs.device)
        if state is not None:
            keep = prev >= 0
            st[keep] = state[prev[keep]]
        x = self.embed_drop(self.inputs(inputs.view(-1, 1)))  # [B, 1, dim]
        out, hs = self.rnn(x, self._unpack(st))
        o = self.drop(out[:, 0])  # [B, hidden]
        h = self.act(self.proj(o))
        loss = self.item_loss(h, targets, sampler)
        new = o if (self.cell == "gru" and self.layers == 1) else self._pack(hs)
        return loss, new.detach()

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
        return self.act(self.proj(top))


class GRU4Rec(StatefulMixin, NeuralRecommender):
    name = "gru4rec"
    module_cls = GRU4RecModule
    hparams = declared("gru4rec")  # model_core.hparams.MODEL_HPARAMS
