"""The model contract, and the wrappers that make any model a :class:`Recommender`.

Neural sequence models subclass :class:`SequenceModule` and implement::

    encode(item_seq [B, L], lengths [B], actions=None, gaps=None) -> [B, L, H]
        hidden state after each input position (right-padded input, see models.data)
    forward(item_seq [B, L], lengths [B], ...)                     -> [B, H]
        the state after the last real event of each row (encode gathered at lengths - 1)
    score_all(h [B, H])                                             -> [B, n_items + 1]
        a score for every item index (column 0 included; callers set it to -inf)
    score_next(h [B, H], last [B])                                  -> [B, n_items + 1]
        score_all plus the counted last-item transition term where the module has one
        (``transitions``, :mod:`model_core.models.transitions`); what predictions use (the
        losses train the network alone)
    loss(batch, targets [B, L], target_actions [B, L] | None, sampler) -> scalar
        next-item loss (full CE, sampled CE, or gBCE) + weighted next-action CE

:class:`NeuralRecommender` wraps such a module: it drops unknown items, pads, batches, moves
to the device, runs under ``torch.inference_mode()`` and takes the top-K on the device.
:class:`CountingRecommender` is the base of the count-based models (popular, markov,
item-kNN, the session-kNN family): they return dense numpy scores and share the same top-K
and exclusion code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_core.models.data import Padded, SeqData, gap_bucket_of, pad_batch
from model_core.models.item_embedding import InputEncoder, ItemEmbedding
from model_core.models.transitions import TransitionTerm
from model_core.predictor import SequenceBatch, TopK
from model_core.vocab import ItemVocab
from schemas.actions import N_ACTIONS

LOSSES = ("ce", "sampled", "gbce")
NEG_INF = float("-inf")


# --------------------------------------------------------------------------- negatives
class NegativeSampler:
    """Shared negatives for one training batch: uniform (``alpha=0``) or ``count**alpha``.

    Popularity draws on catalogues of :data:`BUFFER_MIN_ITEMS` items or more come from a
    buffer refilled every :data:`BUFFER_BATCHES` calls by one ``torch.multinomial`` call:
    each call pays a pass over the whole distribution, which at 400,000 items cost more than
    the 2,048 draws themselves (about 1 ms per batch). The draws are the same kind (independent,
    with replacement, from the same probabilities); on smaller catalogues every call draws
    directly, so their sample stream is what it always was.
    """

    BUFFER_MIN_ITEMS = 20_000
    BUFFER_BATCHES = 32

    def __init__(self, n_items: int, counts: np.ndarray | None = None, alpha: float = 0.0,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.n_items = n_items
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)
        self.alpha = alpha
        self._buffer: torch.Tensor | None = None
        self._at = 0
        if alpha > 0 and counts is not None:
            p = np.asarray(counts, dtype=np.float64)[: n_items + 1].copy() ** alpha
            p[0] = 0.0
            p = p / p.sum()
            self.probs = torch.tensor(p, dtype=torch.float32, device=self.device)
            self.log_q = torch.log(self.probs.clamp_min(1e-12))
        else:
            self.probs = None
            self.log_q = None

    def sample(self, n: int) -> torch.Tensor:
        """[n] item indices in 1..n_items."""
        if self.probs is None:
            return torch.randint(1, self.n_items + 1, (n,), generator=self.gen, device=self.device)
        if self.n_items < self.BUFFER_MIN_ITEMS:
            return torch.multinomial(self.probs, n, replacement=True, generator=self.gen)
        if self._buffer is None or self._at + n > len(self._buffer):
            self._buffer = torch.multinomial(self.probs, n * self.BUFFER_BATCHES,
                                             replacement=True, generator=self.gen)
            self._at = 0
        self._at += n
        return self._buffer[self._at - n: self._at]


# --------------------------------------------------------------------------- neural contract
class SequenceModule(nn.Module):
    """Base of neural sequence models: shared input encoder, tied output, losses, action head.

    Hyper-parameters common to every sequence model (all JSON-serialisable, kept in
    ``self.config`` and in the checkpoint's ``config.json``):
    ``dim``, ``loss`` (ce | sampled | gbce), ``negatives``, ``sample_alpha``, ``in_batch``,
    ``gbce_t``, ``features``, ``combine``, ``n_categories``, ``action_head``,
    ``action_weight``, ``item_mode``, ``text_dim``, ``logq``, ``sparse_emb``.
    """

    def __init__(self, n_items: int, dim: int = 64, loss: str = "ce", negatives: int = 1024,
                 sample_alpha: float = 0.0, in_batch: bool = False, gbce_t: float = 0.75,
                 features: Sequence[str] = (), combine: str = "sum", n_categories: int = 0,
                 action_head: bool = False, action_weight: float = 0.5, item_mode: str = "id",
                 text_dim: int = 0, logq: bool = False, sparse_emb: bool = False) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.n_items = n_items
        self.dim = dim
        self.loss_type = loss
        self.negatives = negatives
        self.sample_alpha = sample_alpha
        self.in_batch = in_batch
        self.gbce_t = gbce_t
        self.logq = logq
        self.action_weight = action_weight
        # sparse_emb: the id embedding gets sparse gradients (only with sampled losses, which
        # never touch the whole item matrix); the trainer then uses SparseAdam for it
        sparse_emb = bool(sparse_emb) and loss != "ce"
        self.inputs = InputEncoder(ItemEmbedding(n_items, dim, mode=item_mode, text_dim=text_dim,
                                                 sparse=sparse_emb),
                                   tuple(features), combine, n_categories)
        self.action_head = nn.Linear(dim, N_ACTIONS) if action_head else None
        #: the counted last-item transition term (a model that takes one sets it)
        self.transitions: TransitionTerm | None = None
        self.config = {
            "dim": dim, "loss": loss, "negatives": negatives, "sample_alpha": sample_alpha,
            "in_batch": in_batch, "gbce_t": gbce_t, "features": list(features),
            "combine": combine, "n_categories": n_categories, "action_head": action_head,
            "action_weight": action_weight, "item_mode": item_mode, "text_dim": text_dim,
            "logq": logq, "sparse_emb": sparse_emb,
        }

    @property
    def item_emb(self) -> ItemEmbedding:
        """The item representation (input and tied output), ``self.inputs.items``."""
        return self.inputs.items

    # -- to implement
    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor, actions=None,
               gaps=None) -> torch.Tensor:  # [B, L] -> [B, L, H]
        raise NotImplementedError

    # -- shared
    def forward(self, item_seq: torch.Tensor, lengths: torch.Tensor, actions=None,
                gaps=None) -> torch.Tensor:
        """[B, L], [B] -> [B, H]: the state after each row's last real event."""
        out = self.encode(item_seq, lengths, actions, gaps)  # [B, L, H]
        idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, idx).squeeze(1)

    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        """[B, H] -> [B, n_items + 1] (tied output: dot product with every item vector)."""
        return h @ self.item_emb.item_matrix().t()

    def score_items(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """[B, H], [B, C] -> [B, C]: what :meth:`score_all` gives at ``idx``, computed for
        those items only (a module that changes :meth:`score_all` changes this with it)."""
        return torch.bmm(self.item_emb.rows(idx), h.unsqueeze(-1)).squeeze(-1)

    def score_next(self, h: torch.Tensor, last: torch.Tensor,
                   idx: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H], [B] each row's last known item (0 = none) -> [B, n_items + 1]: the scores
        of the next item, :meth:`score_all` plus the transition term where there is one;
        with ``idx`` [B, C], those at ``idx`` only (:meth:`score_items` plus the term)."""
        sc = self.score_all(h) if idx is None else self.score_items(h, idx)
        term = self.transitions
        if term is None or float(term.weight) == 0.0:
            return sc
        return sc + term.weight * (term.rows(last, sc.shape[1]) if idx is None
                                   else term.at(last, idx))

    def action_logits(self, h: torch.Tensor) -> torch.Tensor | None:
        """[B, H] -> [B, N_ACTIONS] logits of the next action, or None without a head."""
        return None if self.action_head is None else self.action_head(h)

    def item_loss(self, h: torch.Tensor, y: torch.Tensor,
                  sampler: NegativeSampler | None) -> torch.Tensor:
        """h [N, H] states, y [N] next items (all > 0) -> mean next-item loss."""
        if self.loss_type == "ce" or sampler is None:
            return F.cross_entropy(self.score_all(h)[:, 1:], y - 1)
        neg = sampler.sample(self.negatives)  # [S]
        # A sampled negative equal to the target is masked out when that happens often
        # enough to matter (small catalogues); on large ones it is rare and left in.
        mask_hits = self.negatives * 20 > self.n_items
        s_pos = (h * self.item_emb.rows(y)).sum(-1)  # [N]
        s_neg = h @ self.item_emb.rows(neg).t()  # [N, S]
        if self.loss_type == "gbce":
            if mask_hits:
                s_neg = s_neg.masked_fill(neg.view(1, -1) == y.view(-1, 1), NEG_INF)
            alpha = self.negatives / max(1, self.n_items - 1)
            beta = alpha * (self.gbce_t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
            # log(sigmoid(s)^beta) = -beta * softplus(-s);  log(1 - sigmoid(s)) = -softplus(s)
            return (beta * F.softplus(-s_pos) + F.softplus(s_neg).sum(-1)).mean()
        n = h.shape[0]
        if self.in_batch:
            # candidates: every target of the batch (row i's own is the label) + the samples
            s_bat = h @ self.item_emb.rows(y).t()  # [N, N]
            if self.logq and sampler.log_q is not None:
                s_bat = s_bat - sampler.log_q[y].view(1, -1)
                s_neg = s_neg - sampler.log_q[neg].view(1, -1)
            eye = torch.arange(n, device=h.device)
            same = y.view(1, -1) == y.view(-1, 1)
            same[eye, eye] = False
            s_bat = s_bat.masked_fill(same, NEG_INF)
            if mask_hits:
                s_neg = s_neg.masked_fill(neg.view(1, -1) == y.view(-1, 1), NEG_INF)
            lse = torch.logaddexp(torch.logsumexp(s_bat, -1), torch.logsumexp(s_neg, -1))
            return (lse - s_bat[eye, eye]).mean()
        if self.logq and sampler.log_q is not None:
            s_pos = s_pos - sampler.log_q[y]
            s_neg = s_neg - sampler.log_q[neg].view(1, -1)
        if mask_hits:
            s_neg = s_neg.masked_fill(neg.view(1, -1) == y.view(-1, 1), NEG_INF)
        # cross-entropy with the positive as class 0, without building [N, 1 + S]
        return (torch.logaddexp(s_pos, torch.logsumexp(s_neg, -1)) - s_pos).mean()

    def loss(self, batch: Padded, targets: torch.Tensor, target_actions: torch.Tensor | None,
             sampler: NegativeSampler | None) -> tuple[torch.Tensor, dict]:
        """Mean next-item loss over real positions (+ action_weight * next-action CE)."""
        out = self.encode(batch.items, batch.lengths, batch.actions, batch.gaps)  # [B, L, H]
        mask = targets > 0  # [B, L]
        h = out[mask]  # [N, H]
        loss = self.item_loss(h, targets[mask], sampler)
        stats = {"item_loss": float(loss.detach())}
        if self.action_head is not None and target_actions is not None:
            ta = target_actions[mask]  # [N] action id + 1, 0 = unknown
            ok = ta > 0
            if bool(ok.any()):
                a_loss = F.cross_entropy(self.action_head(h[ok]), ta[ok] - 1)
                stats["action_loss"] = float(a_loss.detach())
                loss = loss + self.action_weight * a_loss
        return loss, stats


def last_items(p: Padded) -> torch.Tensor:
    """[B] the last item of each right-padded row of ``p`` (0 for an empty row, which is
    one padding step)."""
    return p.items.gather(1, (p.lengths - 1).clamp_min(0).view(-1, 1)).view(-1)


# --------------------------------------------------------------------------- top-K
def topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over columns 1.. of ``scores`` [B, V] -> (items [B, k] never 0, scores)."""
    k = max(1, min(k, scores.shape[1] - 1))
    vals, idx = torch.topk(scores[:, 1:], k, dim=1)
    return idx + 1, vals


def exclude_items(scores: torch.Tensor, histories: Sequence[np.ndarray]) -> None:
    """Set ``scores[b, i] = -inf`` for every item ``i`` of ``histories[b]`` (in place)."""
    rows, cols = [], []
    for b, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        h = h[h > 0]
        rows.append(np.full(len(h), b, dtype=np.int64))
        cols.append(h)
    if not rows:
        return
    r = torch.from_numpy(np.concatenate(rows)).to(scores.device)
    c = torch.from_numpy(np.concatenate(cols)).to(scores.device)
    keep = c < scores.shape[1]
    scores[r[keep], c[keep]] = NEG_INF


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


class _RecommenderBase:
    """What every recommender shares: identity, checkpoint saving, batched top-K."""

    name = "base"

    def __init__(self, vocab: ItemVocab, config: dict | None = None, device="cpu",
                 version: str = "untrained", batch_size: int = 512) -> None:
        self.vocab = vocab
        self.config = dict(config or {})
        self.device = torch.device(device)
        self.version = version
        self.batch_size = batch_size
        self.meta: dict = {}

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    def _score_tensor(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, len(vocab)] float32 scores on ``self.device`` (column 0 = -inf)."""
        raise NotImplementedError

    def _action_probs(self, batch: SequenceBatch) -> np.ndarray | None:
        return None

    def score(self, batch: SequenceBatch) -> np.ndarray:
        out = np.empty((len(batch), len(self.vocab)), dtype=np.float32)
        for s, e in _chunks(len(batch), self.batch_size):
            out[s:e] = self._score_tensor(batch.rows(s, e)).float().cpu().numpy()
        return out

    def score_candidates(self, batch: SequenceBatch,
                         candidates: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each row's scores at its candidates (vocabulary indices, 1 and up): what
        :meth:`score` gives at them. Here the full-catalogue scores, gathered; a model that
        can score a few items alone overrides it (serving's re-ranking asks for ~100)."""
        full = self.score(batch)
        return [full[r, np.asarray(c, dtype=np.int64)] for r, c in enumerate(candidates)]

    def predict_topk(self, batch: SequenceBatch, k: int, exclude_history: bool = False) -> TopK:
        items, scores = [], []
        for s, e in _chunks(len(batch), self.batch_size):
            sub = batch.rows(s, e)
            sc = self._score_tensor(sub)
            if exclude_history:
                exclude_items(sc, sub.items)
            it, vs = topk_rows(sc, k)
            items.append(it.cpu().numpy())
            scores.append(vs.float().cpu().numpy())
        k_eff = max(1, min(k, self.n_items))
        items_a = np.concatenate(items) if items else np.zeros((0, k_eff), np.int64)
        scores_a = np.concatenate(scores) if scores else np.zeros((0, k_eff), np.float32)
        return TopK(items=items_a.astype(np.int64), scores=scores_a.astype(np.float32),
                    action_probs=self._action_probs(batch))


# --------------------------------------------------------------------------- neural wrapper
#: the tensor of a neural checkpoint that holds the training counts (beside the module's)
ITEM_COUNTS = "item_counts"


class NeuralRecommender(_RecommenderBase):
    """A :class:`SequenceModule` used as a :class:`~model_core.predictor.Recommender`.

    ``config`` holds the module's constructor arguments plus ``max_len``; the module class is
    ``module_cls``. ``trained_actions`` tells whether the next-action head was trained (only
    then ``predict_topk`` returns ``action_probs``).
    """

    module_cls: type[SequenceModule] = SequenceModule

    def __init__(self, vocab: ItemVocab, config: dict | None = None, device="cpu",
                 version: str = "untrained", batch_size: int = 512, seed: int = 0) -> None:
        config = dict(config or {})
        self.max_len = int(config.pop("max_len", 50))
        self.trained_actions = bool(config.pop("trained_actions", False))
        if getattr(self.module_cls, "takes_max_len", False):
            config["max_len"] = self.max_len
        with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
            torch.manual_seed(seed)
            module = self.module_cls(n_items=vocab.n_items, **config)
        module.config.pop("max_len", None)
        super().__init__(vocab, {**module.config, "max_len": self.max_len}, device, version,
                         batch_size)
        self.module = module.to(self.device)
        self.module.eval()
        #: training interactions per vocabulary index (index 0 unused), set by the trainer and
        #: saved in the checkpoint beside the weights: the beyond-accuracy figures (novelty,
        #: popularity) of ``evaluate`` and the online windows use them. None: a checkpoint
        #: saved before they were stored.
        self.item_counts: np.ndarray | None = None

    @property
    def config_full(self) -> dict:
        return {**self.module.config, "max_len": self.max_len,
                "trained_actions": self.trained_actions}

    def to(self, device) -> NeuralRecommender:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def pad(self, batch: SequenceBatch) -> Padded:
        enc = self.module.inputs
        return pad_batch(batch.items, batch.actions, batch.timestamps_ms, self.max_len,
                         self.device, use_actions=enc.uses_actions, use_gaps=enc.uses_gaps)

    def _hidden(self, batch: SequenceBatch) -> torch.Tensor:
        return self._hidden_last(batch)[0]

    def _hidden_last(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, H] states, [B] each row's last known item, 0 for an empty row)."""
        p = self.pad(batch)
        h = self.module(p.items, p.lengths, p.actions, p.gaps)
        return h, last_items(p)

    def _score_tensor(self, batch: SequenceBatch) -> torch.Tensor:
        with torch.inference_mode():
            sc = self.module.score_next(*self._hidden_last(batch)).float()
            sc[:, 0] = NEG_INF
            return sc

    def score_candidates(self, batch: SequenceBatch,
                         candidates: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The sequence representation once per row, scored against its candidates only
        (:meth:`SequenceModule.score_next` at them: ``score_items`` plus a transition
        term)."""
        width = max((len(c) for c in candidates), default=0)
        idx = np.zeros((len(candidates), width), dtype=np.int64)
        for r, c in enumerate(candidates):
            idx[r, :len(c)] = c
        out = np.empty(idx.shape, dtype=np.float32)
        with torch.inference_mode():
            for s, e in _chunks(len(batch), self.batch_size):
                it = torch.from_numpy(idx[s:e]).to(self.device)
                h, last = self._hidden_last(batch.rows(s, e))
                out[s:e] = self.module.score_next(h, last, it).float().cpu().numpy()
        return [out[r, :len(c)] for r, c in enumerate(candidates)]

    def predict_topk(self, batch: SequenceBatch, k: int, exclude_history: bool = False) -> TopK:
        items, scores, probs = [], [], []
        with torch.inference_mode():
            for s, e in _chunks(len(batch), self.batch_size):
                sub = batch.rows(s, e)
                h, last = self._hidden_last(sub)
                sc = self.module.score_next(h, last).float()
                sc[:, 0] = NEG_INF
                if exclude_history:
                    exclude_items(sc, sub.items)
                it, vs = topk_rows(sc, k)
                items.append(it.cpu().numpy())
                scores.append(vs.cpu().numpy())
                if self.trained_actions and self.module.action_head is not None:
                    probs.append(torch.softmax(self.module.action_logits(h).float(), -1).cpu().numpy())
        k_eff = max(1, min(k, self.n_items))
        return TopK(
            items=np.concatenate(items).astype(np.int64) if items else np.zeros((0, k_eff), np.int64),
            scores=np.concatenate(scores).astype(np.float32) if scores else np.zeros((0, k_eff), np.float32),
            action_probs=np.concatenate(probs).astype(np.float32) if probs else None,
        )

    def state_arrays(self) -> dict[str, torch.Tensor]:
        """The module's weights, and ``item_counts`` (the training counts) when known."""
        out = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        if self.item_counts is not None:
            out[ITEM_COUNTS] = torch.as_tensor(np.asarray(self.item_counts, np.float32))
        return out

    def load_arrays(self, arrays: dict[str, torch.Tensor]) -> None:
        arrays = dict(arrays)
        counts = arrays.pop(ITEM_COUNTS, None)
        self.module.load_state_dict(arrays, strict=True)
        self.module.to(self.device)
        self.module.eval()
        self.item_counts = None if counts is None else counts.float().numpy().copy()


# --------------------------------------------------------------------------- streaming state
class StatefulMixin:
    """Incremental scoring from a cached recurrent state (GRU4Rec), numpy in and out.

    The state of one user is a float32 vector of :attr:`state_dim` values, so the stream can
    keep it as bytes beside the user's sequence. An event with an unknown item (index 0)
    leaves the state unchanged.
    """

    @property
    def state_dim(self) -> int:
        return self.module.state_dim

    def init_state(self, n: int) -> np.ndarray:
        """[n, state_dim] zeros: the state of an empty history."""
        return np.zeros((n, self.state_dim), dtype=np.float32)

    def step(self, state: np.ndarray, items: np.ndarray, actions: np.ndarray | None = None,
             gap_ms: np.ndarray | None = None) -> np.ndarray:
        """Advance each row's state by one event.

        ``items`` [n] vocabulary indices, ``actions`` [n] class ids, ``gap_ms`` [n] time since
        the user's previous event (negative or absent = none).
        """
        items_t = torch.as_tensor(np.asarray(items, dtype=np.int64), device=self.device)
        a = None
        if self.module.inputs.uses_actions:
            a = (torch.as_tensor(np.asarray(actions, dtype=np.int64), device=self.device) + 1
                 if actions is not None else torch.zeros_like(items_t))
        g = None
        if self.module.inputs.uses_gaps:
            g = (torch.as_tensor(gap_bucket_of(gap_ms), device=self.device)
                 if gap_ms is not None else torch.zeros_like(items_t))
        with torch.inference_mode():
            st = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
            new = self.module.step(st, items_t, a, g)
            new = torch.where((items_t > 0).view(-1, 1), new, st)
            return new.cpu().numpy()

    def hidden_of_state(self, state: torch.Tensor) -> torch.Tensor:
        return self.module.output_of_state(state)

    def predict_topk_from_state(self, state: np.ndarray, k: int,
                                exclude: Sequence[np.ndarray] | None = None) -> TopK:
        """Top-K from cached states ``[n, state_dim]``; ``exclude[b]`` items are left out."""
        with torch.inference_mode():
            st = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
            h = self.module.output_of_state(st)
            sc = self.module.score_all(h).float()
            sc[:, 0] = NEG_INF
            if exclude is not None:
                exclude_items(sc, exclude)
            it, vs = topk_rows(sc, k)
            probs = None
            if self.trained_actions and self.module.action_head is not None:
                probs = torch.softmax(self.module.action_logits(h).float(), -1).cpu().numpy()
            return TopK(items=it.cpu().numpy().astype(np.int64),
                        scores=vs.cpu().numpy().astype(np.float32), action_probs=probs)


# --------------------------------------------------------------------------- baselines
class CountingRecommender(_RecommenderBase):
    """Base of count-based baselines; subclasses implement ``fit`` and ``_dense_scores``.

    Their state is a dict of numpy arrays (:meth:`state_arrays`), saved as safetensors.
    Next-action probabilities come from action counts: the marginal distribution, or
    (Markov) the distribution conditioned on the last action.
    """

    def __init__(self, vocab: ItemVocab, config: dict | None = None, device="cpu",
                 version: str = "untrained", batch_size: int = 512, seed: int = 0) -> None:
        super().__init__(vocab, config, device, version, batch_size)
        self.item_counts = np.zeros(len(vocab), dtype=np.float32)
        # [N_ACTIONS + 1, N_ACTIONS]: row 0 = marginal, row a+1 = after action a
        self.action_counts = np.zeros((N_ACTIONS + 1, N_ACTIONS), dtype=np.float32)

    @property
    def config_full(self) -> dict:
        return dict(self.config)

    def fit(self, data: SeqData) -> CountingRecommender:
        counts = np.bincount(np.concatenate(data.items) if data.items else np.zeros(0, np.int64),
                             minlength=len(self.vocab)).astype(np.float32)
        self.item_counts = counts[: len(self.vocab)]
        self.item_counts[0] = 0
        self.action_counts[:] = 0
        if data.actions is not None:
            for a in data.actions:
                a = np.asarray(a, dtype=np.int64)
                if len(a):
                    np.add.at(self.action_counts[0], a, 1)
                if len(a) > 1:
                    np.add.at(self.action_counts, (a[:-1] + 1, a[1:]), 1)
        self._fit(data)
        return self

    def _fit(self, data: SeqData) -> None:
        pass

    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def popularity_tiebreak(self) -> np.ndarray:
        """Popularity scaled into [0, 1): added to integer-valued scores to break ties."""
        return self.item_counts / (self.item_counts.max(initial=0) + 1.0)

    @staticmethod
    def histories(batch: SequenceBatch) -> list[np.ndarray]:
        """Each row's known items (index > 0), what the counts are read at."""
        return [np.asarray(h, dtype=np.int64)[np.asarray(h) > 0] for h in batch.items]

    def _score_tensor(self, batch: SequenceBatch) -> torch.Tensor:
        hist = self.histories(batch)
        sc = torch.from_numpy(np.ascontiguousarray(self._dense_scores(hist), dtype=np.float32))
        sc = sc.to(self.device)
        sc[:, 0] = NEG_INF
        return sc

    def _action_probs(self, batch: SequenceBatch) -> np.ndarray | None:
        if self.action_counts[0].sum() == 0:
            return None
        marg = (self.action_counts[0] + 1.0) / (self.action_counts[0].sum() + N_ACTIONS)
        out = np.tile(marg, (len(batch), 1))
        if self.conditional_actions and batch.actions is not None:
            for b, a in enumerate(batch.actions):
                if len(a):
                    row = self.action_counts[int(a[-1]) + 1]
                    out[b] = (row + marg) / (row.sum() + 1.0)
        return out.astype(np.float32)

    conditional_actions = False

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"item_counts": self.item_counts, "action_counts": self.action_counts,
                **self._extra_arrays()}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_counts = np.asarray(arrays["item_counts"], dtype=np.float32)
        self.action_counts = np.asarray(arrays["action_counts"], dtype=np.float32)
        if len(self.item_counts) != len(self.vocab):
            raise ValueError(f"item_counts has {len(self.item_counts)} entries, "
                             f"vocabulary has {len(self.vocab)}")
        self._load_extra(arrays)

    def _load_extra(self, arrays: dict[str, np.ndarray]) -> None:
        pass

