"""Session-based k-nearest-neighbour recommenders: SKNN, V-SKNN, STAN and VSTAN.

All four score a history (the *current session*) the same way, in four steps:

1. **Candidates**: the training sequences (*sessions*) that share at least one item with the
   current session. When there are more than ``sample_size``, only the ``sample_size`` most
   recent ones are kept (recency = time of a session's last event), as in the published
   methods' "recent" sampling.
2. **Similarity** of each candidate to the current session (model-specific, below).
3. **Neighbours**: the ``k`` candidates of highest similarity (ties: the more recent first,
   then the earlier trained), those with a similarity above zero.
4. **Item scores**: every item of every neighbour receives that neighbour's similarity, times
   model-specific item weights; an item's score is the sum over the neighbours. Items of the
   current session are scored too (the published ``remind=True`` default: repeat clicks are
   common targets in session logs).

The models, with their published defaults (the session-rec framework,
github rn5l/session-rec, ``algorithms/knn/``, is the common reference implementation; its
class defaults are used where a paper leaves a value open):

* **SKNN** (Jannach & Ludewig, RecSys 2017, "When recurrent neural networks meet the
  neighborhood for session-based recommendation"): binary session vectors, cosine
  similarity ``|s ∩ n| / sqrt(|s| |n|)`` over distinct items (the framework's ``cosine``
  computes ``|s ∩ n| / sqrt(|s|) * sqrt(|n|)``, an operator-precedence slip; we use the
  cosine the paper names). ``k`` 100, ``sample_size`` 500 (the framework's documented
  defaults).
* **V-SKNN** (Ludewig & Jannach, UMUAI 2018, "Evaluation of session-based recommendation
  algorithms"): the current session's items are weighted by position, ``weighting`` "linear"
  (the last item 1, each earlier one 0.1 less, 0 from ten positions back; the framework's
  ``linear`` counts the ten from the session's start instead, so in sessions longer than
  ten clicks its newest items weigh 0 and early ones go negative — we use the decay as the
  paper describes it), "same", "div" (``p / L``) or "quadratic" (``(p / L)^2``); similarity
  = the weights of the shared items summed, divided by the number of distinct items of the
  current session. A neighbour's contribution is divided by ``step`` (the framework's
  default ``weighting_score`` "div"): step 1 when the neighbour contains the last item of the
  current session, 2 when its most recent shared item is the one before, and so on.
  ``idf_weighting`` w > 0 multiplies an item's contribution by ``1 + w * idf(item)``.
  ``k`` 100, ``sample_size`` 1000, idf off.
* **STAN** (Garg, Gupta, Malhotra, Vig & Shroff, SIGIR 2019, "Sequence and Time Aware
  Neighborhood for Session-based Recommendations"): three exponential decays. Position in
  the current session ``exp((p - L) / lambda_spw)`` weights a cosine similarity
  ``sum_shared w / (sqrt(sum_current w^2) sqrt(|n|))``; recency of the neighbour
  ``exp(-(t - t_n) / lambda_snh)`` (``lambda_snh`` in days) multiplies it; a neighbour's item
  at (last) position ``l`` in the neighbour gets ``exp(-|l - l*| / lambda_inh)``, ``l*`` the
  neighbour's last position holding an item of the current session. ``k`` 100,
  ``sample_size`` 5000, ``lambda_spw`` 1.02, ``lambda_snh`` 5, ``lambda_inh`` 2.05 (the
  framework's STAN defaults). A lambda of 0 switches its decay off.
* **VSTAN** (Ludewig, Mauro, Latifi & Jannach, UMUAI 2021, arXiv 1910.12781, "Empirical
  analysis of session-based recommendation algorithms"): STAN plus V-SKNN's two
  ideas: a neighbour's contribution decays with the position in the current session of its
  most recent shared item, ``exp((p* - L) / lambda_ipw)``, and items are weighted
  ``1 + lambda_idf * idf(item)``. Defaults: STAN's, ``lambda_ipw`` 1.02, ``lambda_idf`` 5.

``idf(item) = log(n_sessions / clicks(item))`` over the training sequences, as in the
framework (clamped at 0, which only changes items clicked more often than there are
sessions). An item repeated in a session counts once in the similarity and takes the
position of its last occurrence (in the current session and in the neighbour).

Beside the two slips of the framework's code named above, two things differ from it, and
leave every ranking as defined:

* STAN's time decay is taken relative to the most recent candidate of each row, not to the
  current event's time: ``exp(-(t - t_n)/λ) = exp(-(t - t_max)/λ) · exp(-(t_max - t_n)/λ)``,
  and the first factor is the same for every neighbour of the row, so neighbours and items
  rank the same, no timestamp is needed at scoring time, and old training data cannot make
  every score underflow to 0.
* Items no neighbour scores (the published models give them 0, all tied) get
  ``popularity / (max popularity + 1) - 1``, in ``[-1, 0)``: below every scored item, in order
  of training popularity, so a top-K list is always full and deterministic.

Scoring is vectorised over a batch with numpy: an inverted index item -> (session, last
position) finds the candidates of all rows at once, and per-(row, session) sums and maxima
are sorted reductions. A checkpoint holds the sessions as CSR arrays (distinct items with
their last positions) and each session's last timestamp; the inverted index and the idf are
rebuilt at load.
"""

from __future__ import annotations

import numpy as np

from model_core.hparams import declared
from model_core.models.base import CountingRecommender
from model_core.models.data import SeqData

#: Position weightings of V-SKNN's current session (``weighting``), with ``p`` 1..``L``.
WEIGHTINGS = ("linear", "same", "div", "quadratic")
DAY_MS = 86_400_000.0


def _expand(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR ``indptr`` and row ids ``rows`` [n]: (which of the ``n`` rows each element
    comes from, the element's index into the CSR data), row by row."""
    start = indptr[rows]
    counts = indptr[rows + 1] - start
    owner = np.repeat(np.arange(len(rows)), counts)
    first = np.cumsum(counts) - counts
    return owner, start[owner] + (np.arange(len(owner)) - first[owner])


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of ``keys`` and the start of each run of equal keys in that order."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, np.int64)
    return order, starts


def _rank_within(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rank of each element within its row after sorting by ``order`` (rows ascending)."""
    r = rows[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else np.zeros(0, np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, len(r)]))
    rank = np.empty(len(r), np.int64)
    rank[order] = np.arange(len(r)) - first
    return rank


class SessionKNNBase(CountingRecommender):
    """The shared neighbourhood machinery (steps 1-4 of the module docstring).

    Subclasses set :attr:`defaults` and implement :meth:`_current_weights`,
    :meth:`_similarity` and :meth:`_contributions`.
    """

    defaults: dict = {}
    #: (row, candidate session) pairs scored at once, at most (bounds the memory of a batch)
    MAX_PAIRS = 4_000_000

    def __init__(self, vocab, config=None, **kw) -> None:
        config = {**self.defaults, **(config or {})}
        super().__init__(vocab, config, **kw)
        for key in ("k", "sample_size"):
            if int(config[key]) < 1:
                raise ValueError(f"{self.name}: {key} must be at least 1, got {config[key]!r}")
        self.k = int(config["k"])
        self.sample_size = int(config["sample_size"])
        self.sess_indptr = np.zeros(1, np.int64)
        self.sess_items = np.zeros(0, np.int32)
        self.sess_pos = np.zeros(0, np.int32)
        self.sess_time = np.zeros(0, np.int64)
        self._build_index()

    # ------------------------------------------------------------------ fit / state
    def _fit(self, data: SeqData) -> None:
        V = len(self.vocab)
        seqs = [np.asarray(s, dtype=np.int64) for s in data.items]
        keep = [i for i, s in enumerate(seqs) if len(s)]
        if data.timestamps_ms is not None:
            times = np.array([int(data.timestamps_ms[i][-1]) for i in keep], dtype=np.int64)
        else:  # no clock: the order of the sequences stands for their recency
            times = np.arange(len(keep), dtype=np.int64)
        lens = np.array([len(seqs[i]) for i in keep], dtype=np.int64)
        items = np.concatenate([seqs[i] for i in keep]) if keep else np.zeros(0, np.int64)
        sess = np.repeat(np.arange(len(keep)), lens)
        pos = (np.arange(len(items)) - np.repeat(np.cumsum(lens) - lens, lens) + 1)
        # distinct (session, item) pairs with the item's last position in the session
        order, starts = _groups(sess * V + items)
        ends = np.r_[starts[1:], len(order)] - 1
        last = order[ends] if len(order) else order  # stable sort: the last occurrence
        s_of = sess[last]
        per_sess = np.bincount(s_of, minlength=len(keep))
        self.sess_indptr = np.r_[0, np.cumsum(per_sess)].astype(np.int64)
        self.sess_items = items[last].astype(np.int32)
        self.sess_pos = pos[last].astype(np.int32)
        self.sess_time = times
        self._build_index()

    def set_sessions(self, indptr: np.ndarray, items: np.ndarray, pos: np.ndarray,
                     times: np.ndarray) -> None:
        """Replace the session index with these sessions (the layout :meth:`_fit` makes: per
        session its distinct items sorted, each at its last position, and the session's last
        time) and rebuild the inverted index and idf from them and ``item_counts``. The
        online learner's hook: it adds streamed sessions without a refit."""
        self.sess_indptr = np.asarray(indptr, np.int64)
        self.sess_items = np.asarray(items, np.int32)
        self.sess_pos = np.asarray(pos, np.int32)
        self.sess_time = np.asarray(times, np.int64)
        self._build_index()

    def _build_index(self) -> None:
        """Inverted index item -> (session, the item's last position there), and idf."""
        V = len(self.vocab)
        n_sess = len(self.sess_time)
        sess = np.repeat(np.arange(n_sess), np.diff(self.sess_indptr))
        order = np.argsort(self.sess_items, kind="stable")
        self.item_sessions = sess[order].astype(np.int64)
        self.item_pos = self.sess_pos[order].astype(np.int64)
        per_item = np.bincount(self.sess_items, minlength=V)
        self.item_indptr = np.r_[0, np.cumsum(per_item)].astype(np.int64)
        self.sess_len = np.diff(self.sess_indptr).astype(np.float64)
        clicks = self.item_counts.astype(np.float64)
        with np.errstate(divide="ignore"):
            idf = np.log(max(n_sess, 1) / clicks)
        # clamped at 0: an item clicked more often than there are sessions would otherwise
        # get a negative weight, and a negative score that ranks below unscored items
        self.idf = np.where(clicks > 0, np.maximum(idf, 0.0), 0.0)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"sess_indptr": self.sess_indptr, "sess_items": self.sess_items,
                "sess_pos": self.sess_pos, "sess_time": self.sess_time}

    @classmethod
    def extra_shapes(cls, n_vocab: int, header: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The arrays a checkpoint of this model holds beyond the counts (kind, shape); the
        number of sessions and of (session, item) pairs are the checkpoint's own."""
        def length(name):
            shape = header.get(name, ("", (0,)))[1]
            return shape[0] if len(shape) == 1 else -1

        n_sess, nnz = length("sess_time"), length("sess_items")
        return {"sess_indptr": ("I", (n_sess + 1,)), "sess_items": ("I", (nnz,)),
                "sess_pos": ("I", (nnz,)), "sess_time": ("I", (n_sess,))}

    def _load_extra(self, arrays) -> None:
        indptr = np.asarray(arrays["sess_indptr"], dtype=np.int64)
        items = np.asarray(arrays["sess_items"], dtype=np.int64)
        pos = np.asarray(arrays["sess_pos"], dtype=np.int64)
        times = np.asarray(arrays["sess_time"], dtype=np.int64)
        if (len(indptr) != len(times) + 1 or indptr[0] != 0 or indptr[-1] != len(items)
                or (np.diff(indptr) < 0).any()):
            raise ValueError("sess_indptr is not a valid row index of sess_items")
        if len(items) and (items.min() < 1 or items.max() >= len(self.vocab)):
            raise ValueError(f"sess_items holds items outside the vocabulary "
                             f"(1..{len(self.vocab) - 1})")
        if len(pos) != len(items) or (len(pos) and pos.min() < 1):
            raise ValueError("sess_pos must hold a position >= 1 per session item")
        self.sess_indptr, self.sess_time = indptr, times
        self.sess_items, self.sess_pos = items.astype(np.int32), pos.astype(np.int32)
        self._build_index()

    # ------------------------------------------------------------------ model-specific
    def _current_weights(self, pos: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Weight of a current-session item at last position ``pos`` of ``length``."""
        return np.ones(len(pos))

    def _similarity(self, dot, n_cur, sq_cur, n_nb, t_gap_ms) -> np.ndarray:
        """Similarity from the weighted overlap ``dot``, the current session's distinct
        items ``n_cur`` and squared weights ``sq_cur``, the neighbour's distinct items
        ``n_nb`` and its age relative to the row's newest candidate ``t_gap_ms``."""
        raise NotImplementedError

    def _contributions(self, sim, item, nb_pos, nb_star, cur_star, length) -> np.ndarray:
        """What each (neighbour, item) pair adds to the item's score: ``sim`` the
        neighbour's similarity, ``nb_pos`` the item's last position in the neighbour,
        ``nb_star`` the neighbour's last position holding a current-session item,
        ``cur_star`` the current-session position of the neighbour's most recent shared
        item, ``length`` the current session's length."""
        return sim

    # ------------------------------------------------------------------ scoring
    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        V = len(self.vocab)
        B = len(histories)
        out = np.zeros((B, V), dtype=np.float64)
        n_sess = len(self.sess_time)
        hist = [np.asarray(h, dtype=np.int64) for h in histories]
        hist = [h[(h > 0) & (h < V)] for h in hist]
        lens = np.array([len(h) for h in hist], dtype=np.int64)
        if n_sess and lens.sum():
            # rows in groups of at most MAX_PAIRS (row, candidate) pairs (an upper bound:
            # repeated items counted twice), so long histories of popular items cannot make
            # one batch allocate without bound
            flat = np.concatenate(hist)
            per_item = self.item_indptr[flat + 1] - self.item_indptr[flat]
            cost = np.bincount(np.repeat(np.arange(B), lens), weights=per_item, minlength=B)
            group = (np.cumsum(cost) - cost) // self.MAX_PAIRS
            for g in np.unique(group):
                rows = np.flatnonzero(group == g)
                part = np.zeros((len(rows), V), dtype=np.float64)
                self._score_into(part, [hist[r] for r in rows], lens[rows], n_sess)
                out[rows] = part
        # unscored items: below every scored one, by training popularity
        filler = self.popularity_tiebreak().astype(np.float64) - 1.0
        out = np.where(out > 0, out, filler[None, :])
        return out.astype(np.float32)

    def _score_into(self, out, hist, lens, n_sess) -> None:
        V = out.shape[1]
        # 1. distinct current items per row, with their last position
        rows = np.repeat(np.arange(len(hist)), lens)
        items = np.concatenate(hist)
        pos = np.arange(len(items)) - np.repeat(np.cumsum(lens) - lens, lens) + 1
        order, starts = _groups(rows * V + items)
        last = order[np.r_[starts[1:], len(order)] - 1]
        c_row, c_item, c_pos = rows[last], items[last], pos[last]
        c_w = self._current_weights(c_pos.astype(np.float64), lens[c_row].astype(np.float64))
        n_cur = np.bincount(c_row, minlength=len(hist)).astype(np.float64)
        sq_cur = np.bincount(c_row, weights=c_w * c_w, minlength=len(hist))
        # 2. (row, candidate session) pairs through the inverted index
        owner, at = _expand(self.item_indptr, c_item)
        if not len(owner):
            return
        t_row, t_sess = c_row[owner], self.item_sessions[at]
        order, starts = _groups(t_row * n_sess + t_sess)
        p_row, p_sess = t_row[order[starts]], t_sess[order[starts]]
        dot = np.add.reduceat(c_w[owner][order], starts)
        cur_star = np.maximum.reduceat(c_pos[owner][order], starts)
        nb_star = np.maximum.reduceat(self.item_pos[at][order], starts)
        # 3a. the sample_size most recent candidates per row
        t = self.sess_time[p_sess]
        if np.bincount(p_row).max() > self.sample_size:
            rank = _rank_within(p_row, np.lexsort((p_sess, -t, p_row)))
            keep = rank < self.sample_size
            p_row, p_sess, dot, cur_star, nb_star, t = (
                x[keep] for x in (p_row, p_sess, dot, cur_star, nb_star, t))
        newest = np.full(len(hist), np.iinfo(np.int64).min)
        np.maximum.at(newest, p_row, t)
        sim = self._similarity(dot, n_cur[p_row], sq_cur[p_row], self.sess_len[p_sess],
                               (newest[p_row] - t).astype(np.float64))
        # 3b. the k most similar, similarity above zero
        rank = _rank_within(p_row, np.lexsort((p_sess, -t, -sim, p_row)))
        keep = (rank < self.k) & (sim > 0)
        p_row, p_sess, sim, cur_star, nb_star = (
            x[keep] for x in (p_row, p_sess, sim, cur_star, nb_star))
        # 4. every item of every neighbour
        owner, at = _expand(self.sess_indptr, p_sess)
        item = self.sess_items[at].astype(np.int64)
        row = p_row[owner]
        contrib = self._contributions(sim[owner], item, self.sess_pos[at].astype(np.float64),
                                      nb_star[owner].astype(np.float64),
                                      cur_star[owner].astype(np.float64),
                                      lens[row].astype(np.float64))
        out += np.bincount(row * V + item, weights=contrib,
                           minlength=out.size).reshape(out.shape)


def _decay(x: np.ndarray, lam: float) -> np.ndarray:
    """``exp(-x / lam)``; ``lam`` 0 = no decay (weight 1)."""
    return np.exp(-x / lam) if lam > 0 else np.ones_like(x)


class SKNNRecommender(SessionKNNBase):
    """SKNN: cosine similarity of binary session vectors (Jannach & Ludewig, RecSys 2017);
    see :mod:`model_core.models.sknn`. Config: ``k`` (100), ``sample_size`` (500)."""

    name = "sknn"
    hparams = declared("sknn")  # model_core.hparams.MODEL_HPARAMS
    defaults = {"k": 100, "sample_size": 500}

    def _similarity(self, dot, n_cur, sq_cur, n_nb, t_gap_ms):
        return dot / np.sqrt(n_cur * n_nb)


class VSKNNRecommender(SessionKNNBase):
    """V-SKNN: position-weighted current session, neighbours weighted by how recent their
    shared item is, optional idf (Ludewig & Jannach, UMUAI 2018); see
    :mod:`model_core.models.sknn`. Config: ``k`` (100), ``sample_size`` (1000),
    ``weighting`` ("linear"), ``idf_weighting`` (0 = off)."""

    name = "vsknn"
    hparams = declared("vsknn")  # model_core.hparams.MODEL_HPARAMS
    defaults = {"k": 100, "sample_size": 1000, "weighting": "linear", "idf_weighting": 0.0}

    def __init__(self, vocab, config=None, **kw) -> None:
        super().__init__(vocab, config, **kw)
        if self.config["weighting"] not in WEIGHTINGS:
            raise ValueError(f"vsknn: unknown weighting {self.config['weighting']!r}; choose "
                             f"one of {', '.join(WEIGHTINGS)}")

    def _current_weights(self, pos, length):
        w = self.config["weighting"]
        if w == "linear":
            return np.maximum(0.0, 1.0 - 0.1 * (length - pos))
        if w == "div":
            return pos / length
        if w == "quadratic":
            return (pos / length) ** 2
        return np.ones(len(pos))

    def _similarity(self, dot, n_cur, sq_cur, n_nb, t_gap_ms):
        return dot / n_cur

    def _contributions(self, sim, item, nb_pos, nb_star, cur_star, length):
        out = sim / (length - cur_star + 1.0)  # "div": 1 / step of the most recent shared item
        idf_w = float(self.config["idf_weighting"])
        if idf_w > 0:
            out = out * (1.0 + idf_w * self.idf[item])
        return out


class STANRecommender(SessionKNNBase):
    """STAN: position decay in the current session, recency decay of neighbours, and decay
    by distance to the shared item inside a neighbour (Garg et al., SIGIR 2019); see
    :mod:`model_core.models.sknn`. Config: ``k`` (100), ``sample_size`` (5000),
    ``lambda_spw`` (1.02), ``lambda_snh`` (5 days), ``lambda_inh`` (2.05)."""

    name = "stan"
    hparams = declared("stan")  # model_core.hparams.MODEL_HPARAMS
    defaults = {"k": 100, "sample_size": 5000, "lambda_spw": 1.02, "lambda_snh": 5.0,
                "lambda_inh": 2.05}

    def _current_weights(self, pos, length):
        return _decay(length - pos, float(self.config["lambda_spw"]))

    def _similarity(self, dot, n_cur, sq_cur, n_nb, t_gap_ms):
        sim = dot / (np.sqrt(sq_cur) * np.sqrt(n_nb))
        return sim * _decay(t_gap_ms, float(self.config["lambda_snh"]) * DAY_MS)

    def _contributions(self, sim, item, nb_pos, nb_star, cur_star, length):
        return sim * _decay(np.abs(nb_pos - nb_star), float(self.config["lambda_inh"]))


class VSTANRecommender(STANRecommender):
    """VSTAN: STAN with V-SKNN's decay by the current-session position of the shared item
    and idf item weights (Ludewig, Mauro, Latifi & Jannach, UMUAI 2021); see
    :mod:`model_core.models.sknn`. Config: STAN's plus ``lambda_ipw`` (1.02) and
    ``lambda_idf`` (5; 0 = off)."""

    name = "vstan"
    hparams = declared("vstan")  # model_core.hparams.MODEL_HPARAMS
    defaults = {**STANRecommender.defaults, "lambda_ipw": 1.02, "lambda_idf": 5.0}

    def _contributions(self, sim, item, nb_pos, nb_star, cur_star, length):
        out = super()._contributions(sim, item, nb_pos, nb_star, cur_star, length)
        out = out * _decay(length - cur_star, float(self.config["lambda_ipw"]))
        lam_idf = float(self.config["lambda_idf"])
        if lam_idf > 0:
            out = out * (1.0 + lam_idf * self.idf[item])
        return out


__all__ = ["SKNNRecommender", "STANRecommender", "SessionKNNBase", "VSKNNRecommender",
           "VSTANRecommender", "WEIGHTINGS"]
