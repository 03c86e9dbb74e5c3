"""The online learner: the model keeps learning from the newest events of the stream.

    learner = OnlineLearner(model, LearnSchedule(every=250))
    learner.warm(train_events)               # the sequences the model was trained on
    for batch in stream:                     # any micro-batches, in stream order
        for update in learner.learn(batch):  # an update after every 250 events
            publish(model, update.version)

Pure and Kafka-free: a stream process drives it with the micro-batches it consumes, and
``seqstream evaluate --protocol prequential --learn every=N`` drives it over a log
(:mod:`model_core.learn.measure`), so both run this code on the same schedule.

One update (:meth:`OnlineLearner.update`), on the events since the previous one:

1. **New items** get a slot (:class:`~model_core.learn.items.ItemTable`: the vocabulary and
   the model's item arrays grow, or at the bound the least recently seen item's slot is
   reused).
2. The learner's own per-user sequences (the last ``max_len + 1`` events, like the worker's)
   take the events.
3. The model learns them:

   - **counting models** add the micro-batch's counts: item counts and action counts
     (every model), item -> next-item transitions (Markov); the result equals counting the
     whole log from scratch (``tests/test_learn.py`` checks Markov against a refit). The
     session-kNN family (SKNN, V-SKNN, STAN, VSTAN) gets each touched user's (session's)
     events since the stream began as one more session of its index (its last ``max_len + 1``
     events), with the idf recomputed; a key that also has a training session keeps that
     one too, so for a continuing user this is not what a refit would give (for session
     logs such as YooChoose, whose streamed sessions are new, it is). item-kNN: the
     learner keeps the co-occurrence counts (from :meth:`OnlineLearner.warm` on), adds the
     new events' pairs within ``window`` and recomputes the cosine neighbour table, equal
     to a refit;
   - **neural models** (GRU4Rec, SASRec) take ``steps`` gradient steps of their own loss
     (:meth:`~model_core.models.base.SequenceModule.loss`) on each touched user's window
     with targets only at the new events, mixed with windows replayed from a reservoir of
     older sequences (:class:`~model_core.learn.replay.ReplayBuffer`) against forgetting.
     Adam (dense) and SparseAdam (a sparse id embedding) keep their state across updates.
     Before the steps, each item new in this update gets its row from its contexts
     (``init=context``: the model's output vectors at the events before its occurrences,
     the direction that sets them apart from the update's other contexts, scaled to score
     as a true next item does there; GRU4Rec's output bias at the known items' mean),
     because a few small steps from the mean vector never lift a new item into a top-20
     (measured: BENCHMARKS.md "Online learning"). The trained parameters (encoder, trained
     items' rows) take ``settled`` of each step, the rows given during the stream all of
     it (items born after training, while young, ``new_lr`` times it). In a text or fused
     model an item whose metadata the learner has (:mod:`model_core.learn.texts`) starts
     from its text vector instead; a fused model's text projection, shared by every item,
     stays as trained.

4. The model gets a new version, ``<version at start>+u<update number>``.

Updates are deterministic: the same model, schedule and events give the same weights
(dropout and draws are seeded per update).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from model_core.learn.items import ItemTable, grow_counting, grow_neural
from model_core.learn.replay import ReplayBuffer, Snippet
from model_core.learn.schedule import LearnSchedule
from model_core.learn.texts import ItemTexts
from model_core.models import NEURAL_MODELS
from model_core.models.base import NegativeSampler, NeuralRecommender
from model_core.models.data import Padded, gap_buckets
from model_core.models.itemknn import ItemKNNRecommender
from model_core.models.markov import MarkovRecommender, csr_from_pairs
from model_core.models.sknn import SessionKNNBase
from schemas.actions import action_index

#: Models whose update is incremental counting; neural models learn by gradient steps.
INCREMENTAL = ("popular", "markov", "itemknn", "sknn", "vsknn", "stan", "vstan")
#: Every model the learner updates.
LEARNABLE = (*INCREMENTAL, *NEURAL_MODELS)
#: Fused models: a new item started from its text takes the mean ID row of this many
#: text-nearest trained items (:func:`model_core.text.fusion.impute_id_rows`).
TEXT_NEIGHBOURS = 10


def check_learnable(name: str) -> None:
    """Raise a clear error for a model the learner cannot update (before any training)."""
    if name not in LEARNABLE:
        from model_core.exceptions import ModelCoreError

        raise ModelCoreError(f"the online learner updates {', '.join(LEARNABLE)}; {name!r} has "
                             "no incremental update yet")


@dataclass
class Update:
    """One update of the model: its new version and what went into it."""

    version: str
    number: int  # 1, 2, ...
    events: int  # events learned in this update
    users: frozenset = frozenset()  # users (session keys) whose events it learned
    new_items: list[str] = field(default_factory=list)  # ids given a slot in this update
    evicted: list[int] = field(default_factory=list)  # slots reused (their items forgotten)
    loss: float | None = None  # mean training loss of the gradient steps (neural)
    seconds: float = 0.0


class _UserSeq:
    """The learner's view of one user: the last events, as plain lists."""

    __slots__ = ("items", "actions", "ts")

    def __init__(self) -> None:
        self.items: list[int] = []
        self.actions: list[int] = []
        self.ts: list[int] = []

    def add(self, item: int, action: int, ts: int, keep: int) -> None:
        self.items.append(item)
        self.actions.append(action)
        self.ts.append(ts)
        if len(self.items) > keep:
            del self.items[0], self.actions[0], self.ts[0]

    def drop_items(self, drop: set[int]) -> None:
        """Remove every event on an item of ``drop`` (slots being reused)."""
        if drop.intersection(self.items):
            kept = [i for i, x in enumerate(self.items) if x not in drop]
            self.items = [self.items[i] for i in kept]
            self.actions = [self.actions[i] for i in kept]
            self.ts = [self.ts[i] for i in kept]

    def snippet(self, n: int) -> Snippet:
        return Snippet(np.asarray(self.items[-n:], np.int64), np.asarray(self.actions[-n:], np.int64),
                       np.asarray(self.ts[-n:], np.int64))


class OnlineLearner:
    """Updates ``model`` in place from micro-batches of events (see the module docstring)."""

    def __init__(self, model, schedule: LearnSchedule | None = None,
                 max_len: int | None = None, texts: ItemTexts | None = None) -> None:
        self.model = model
        self.schedule = schedule or LearnSchedule()
        self.neural = isinstance(model, NeuralRecommender)
        check_learnable(model.name)
        self.texts = texts
        if texts is not None:
            check_texts(model, texts)
        self.max_len = int(max_len or getattr(model, "max_len", 50) or 50)
        # a model trained here and never saved has no version of its own yet
        self.base_version = (str(model.version) if model.version not in ("", "untrained")
                             else f"{model.name}-unsaved")
        self.items = ItemTable(model.vocab, self.schedule.max_items)
        self.replay = ReplayBuffer(self.schedule.replay, self.schedule.seed)
        self.users: dict[str, _UserSeq] = {}
        self.pending: list = []
        self.clock = 0  # events seen (warm and stream): the item table's clock
        self.n_updates = 0
        self.events_learned = 0
        self.seconds = 0.0  # wall time inside update()
        self.cpu_seconds = 0.0
        self._opts: list | None = None
        self._co: tuple | None = None  # item-kNN: co-occurrence (row, col, count) triplets
        if isinstance(model, ItemKNNRecommender):
            self._co = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
            self.max_len = max(self.max_len, int(model.config["window"]))
        self._sessions: dict[str, _UserSeq] | None = None  # session-kNN: streamed sessions
        if isinstance(model, SessionKNNBase):
            self._sessions = {}
            self._sess_base = (model.sess_indptr.copy(), model.sess_items.copy(),
                               model.sess_pos.copy(), model.sess_time.copy())
        self._rng = np.random.default_rng([self.schedule.seed, 11])
        self._new_seen = np.zeros(len(model.vocab), np.int64)  # see _count_young
        self._from_text = np.zeros(len(model.vocab), bool)  # slots started from their text

    @property
    def version(self) -> str:
        return str(self.model.version)

    # ------------------------------------------------------------------ input
    def warm(self, events: Iterable) -> None:
        """Take the events the model was trained on (in time order) as history: the users'
        sequences, the items' last-seen clock and the replay buffer; nothing is learned."""
        index = self.model.vocab.index
        keep = self.max_len + 1
        co: tuple[list, list] = ([], [])
        for ev in sorted(events, key=lambda e: e.timestamp_ms):
            item = index(ev.item_id)
            if item:
                self.items.last_seen[item] = self.clock
            self.clock += 1
            seq = self.users.get(ev.user_id)
            if seq is None:
                seq = self.users[ev.user_id] = _UserSeq()
            if self._co is not None:
                self._pairs_with(seq, item, *co)
            seq.add(item, action_index(ev.action), ev.timestamp_ms, keep)
        if self._co is not None:
            self._add_cooccurrence(np.asarray(co[0], np.int64), np.asarray(co[1], np.int64),
                                   len(self.model.vocab))
        for seq in self.users.values():
            if len(seq.items) >= 2:
                self.replay.offer(seq.snippet(keep))

    def learn(self, events: Iterable) -> list[Update]:
        """Take events in stream order; an update after every ``schedule.every`` of them."""
        out = []
        for ev in events:
            self.pending.append(ev)
            if len(self.pending) >= self.schedule.every:
                out.append(self.update())
        return out

    def forget_user(self, user: str) -> int:
        """An erase request: the user's sequence, its streamed session (session-kNN: gone
        from the next update's index) and its events waiting for the next update leave the
        learner; returns how many waiting events were dropped. What updates already learned
        stays in the weights and counts."""
        self.users.pop(user, None)
        if self._sessions is not None:
            self._sessions.pop(user, None)
        kept = [ev for ev in self.pending if ev.user_id != user]
        dropped = len(self.pending) - len(kept)
        self.pending = kept
        return dropped

    def until_update(self) -> int:
        """Events still to come before the next update."""
        return self.schedule.every - len(self.pending)

    # ------------------------------------------------------------------ one update
    def update(self) -> Update:
        """Learn the pending events now (also called by :meth:`learn` on schedule)."""
        t0, c0 = time.perf_counter(), time.process_time()
        events, self.pending = self.pending, []
        model = self.model
        clocks = range(self.clock, self.clock + len(events))
        self.clock += len(events)
        adm = self.items.admit([ev.item_id for ev in events], clocks)
        new_ids = model.vocab.item_ids(adm.added)
        if adm.evicted:
            self._forget(adm.evicted)
        if self.neural:
            grow_neural(model.module, adm.grown_to, adm.added, adm.evicted,
                        "random" if self.schedule.init == "random" else "mean",
                        self._rng, self._opts or ())
            if getattr(model, "item_counts", None) is not None:
                # the training counts saved with the weights (beyond accuracy) follow the
                # vocabulary, or a published version does not load: new and reused slots 0
                grow_counting(model, adm.grown_to)
                model.item_counts[np.asarray(adm.evicted, np.int64)] = 0
        else:
            grow_counting(model, adm.grown_to)
        index = model.vocab.index
        keep = self.max_len + 1
        touched: dict[str, int] = {}  # user -> events of this update (insertion = first seen)
        pairs_src, pairs_dst = [], []
        act_prev, act_next = [], []
        co: tuple[list, list] = ([], [])
        items = np.fromiter((index(ev.item_id) for ev in events), np.int64, len(events))
        acts = np.fromiter((action_index(ev.action) for ev in events), np.int64, len(events))
        for ev, item, act in zip(events, items.tolist(), acts.tolist(), strict=True):
            seq = self.users.get(ev.user_id)
            if seq is None:
                seq = self.users[ev.user_id] = _UserSeq()
            if self._co is not None:
                self._pairs_with(seq, item, *co)
            if seq.items:
                pairs_src.append(seq.items[-1])
                pairs_dst.append(item)
                act_prev.append(seq.actions[-1])
                act_next.append(act)
            seq.add(item, act, ev.timestamp_ms, keep)
            touched[ev.user_id] = touched.get(ev.user_id, 0) + 1
            if self._sessions is not None:
                sess = self._sessions.get(ev.user_id)
                if sess is None:
                    sess = self._sessions[ev.user_id] = _UserSeq()
                sess.add(item, act, ev.timestamp_ms, keep)
        loss = None
        if self.neural:
            self._count_young(items, adm)
            from_text = self._install_texts(adm.added) if self.texts is not None else set()
            loss = self._gradient_steps(touched, [s for s in adm.added if s not in from_text])
        else:
            self._count(items, acts, np.asarray(pairs_src, np.int64), np.asarray(pairs_dst, np.int64),
                        np.asarray(act_prev, np.int64), np.asarray(act_next, np.int64))
            if self._co is not None:
                self._add_cooccurrence(np.asarray(co[0], np.int64), np.asarray(co[1], np.int64),
                                       adm.grown_to)
                self._neighbours()
        self.n_updates += 1
        self.events_learned += len(events)
        model.version = f"{self.base_version}+u{self.n_updates}"
        secs = time.perf_counter() - t0
        self.seconds += secs
        self.cpu_seconds += time.process_time() - c0
        return Update(model.version, self.n_updates, len(events), frozenset(touched), new_ids,
                      list(adm.evicted), loss, secs)

    def _forget(self, slots: list[int]) -> None:
        """Reused slots: the learner's sequences and replay buffer drop the old item; a
        counting model's counts and transitions of it are cleared."""
        drop = set(slots)
        for seq in self.users.values():
            seq.drop_items(drop)
        for s in slots:
            self.replay.drop_item(s)
        if self._co is not None:
            r, c, w = self._co
            keep = ~(np.isin(r, np.asarray(slots)) | np.isin(c, np.asarray(slots)))
            self._co = (r[keep], c[keep], w[keep])
        if self._sessions is not None:
            for sess in self._sessions.values():
                sess.drop_items(drop)
            indptr, items, pos, times = self._sess_base
            keep = ~np.isin(items, np.asarray(slots))
            rows = np.repeat(np.arange(len(times)), np.diff(indptr))[keep]
            indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=len(times)))].astype(np.int64)
            self._sess_base = (indptr, items[keep], pos[keep], times)
        if self.neural:
            return
        m = self.model
        idx = np.asarray(slots, np.int64)
        m.item_counts[idx] = 0
        if isinstance(m, MarkovRecommender):
            src, dst, w = _triplets(m)
            keep = ~(np.isin(src, idx) | np.isin(dst, idx))
            m.indptr, m.indices, m.data = csr_from_pairs(src[keep], dst[keep], w[keep],
                                                         len(m.indptr) - 1)

    # ------------------------------------------------------------------ counting models
    def _count(self, items, acts, src, dst, a_prev, a_next) -> None:
        m = self.model
        known = items > 0
        m.item_counts += np.bincount(items[known], minlength=len(m.item_counts)).astype(np.float32)
        m.item_counts[0] = 0
        np.add.at(m.action_counts[0], acts, 1)
        np.add.at(m.action_counts, (a_prev + 1, a_next), 1)
        if self._sessions is not None:
            self._rebuild_sessions()
        if isinstance(m, MarkovRecommender):
            ok = (src > 0) & (dst > 0)
            s0, d0, w0 = _triplets(m)
            n = len(m.item_counts)
            m.indptr, m.indices, m.data = csr_from_pairs(
                np.r_[s0, src[ok]], np.r_[d0, dst[ok]], np.r_[w0, np.ones(int(ok.sum()))], n)

    def _pairs_with(self, seq: _UserSeq, item: int, src: list, dst: list) -> None:
        """item-kNN: the pairs a new event makes with the user's ``window`` previous ones
        (both directions, an item never with itself), as the model's fit counts them."""
        window = int(self.model.config["window"])
        for other in seq.items[-window:]:
            if other != item and other > 0 and item > 0:
                src += [other, item]
                dst += [item, other]

    def _add_cooccurrence(self, src: np.ndarray, dst: np.ndarray, n: int) -> None:
        r, c, w = self._co
        indptr, cols, data = csr_from_pairs(np.r_[r, src], np.r_[c, dst],
                                            np.r_[w, np.ones(len(src))], n)
        self._co = (np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)),
                    cols.astype(np.int64), data.astype(np.float64))

    def _neighbours(self) -> None:
        """item-kNN's table from the co-occurrence counts: cosine over occurrences, the
        ``neighbours`` most similar per item (the model's own definition)."""
        m = self.model
        n = len(m.item_counts)
        rows, cols, co = self._co
        cnt = np.maximum(m.item_counts.astype(np.float64), 1.0)
        sim = co.astype(np.float32) / np.sqrt(cnt[rows] * cnt[cols])
        order = np.lexsort((-sim, rows))
        rows, cols, sim = rows[order], cols[order], sim[order]
        starts = np.r_[0, np.cumsum(np.bincount(rows, minlength=n))][:-1]
        keep = (np.arange(len(rows)) - starts[rows]) < int(m.config["neighbours"])
        m.indices, m.data = cols[keep].astype(np.int32), sim[keep].astype(np.float32)
        m.indptr = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=n))].astype(np.int64)

    def _rebuild_sessions(self) -> None:
        """The session-kNN index: the training sessions, then one per streamed key (distinct
        items at their last position, the time of the key's last event)."""
        m = self.model
        indptr, items, pos, times = self._sess_base
        add_items, add_pos, add_len, add_time = [items], [pos], [], []
        for sess in self._sessions.values():
            last: dict[int, int] = {}
            for p, it in enumerate(sess.items, 1):
                if it > 0:
                    last[it] = p
            if not last:
                continue
            its = np.fromiter(last.keys(), np.int32, len(last))
            order = np.argsort(its)  # by item, as the model's own fit lays a session out
            add_items.append(its[order])
            add_pos.append(np.fromiter(last.values(), np.int32, len(last))[order])
            add_len.append(len(last))
            add_time.append(sess.ts[-1])
        m.set_sessions(np.r_[indptr, indptr[-1] + np.cumsum(add_len, dtype=np.int64)],
                       np.concatenate(add_items), np.concatenate(add_pos),
                       np.r_[times, np.asarray(add_time, np.int64)])

    # ------------------------------------------------------------------ neural models
    @torch.no_grad()
    def _install_texts(self, added: Sequence[int]) -> set[int]:
        """Text vectors from :attr:`texts` (a text or fused model): each slot given a row in
        this update whose item has a text starts from it — fused, with the mean ID row of
        its :data:`TEXT_NEIGHBOURS` text-nearest trained items (a zero ID row lacks the part
        of the trained items' ID rows that offsets what all texts share, and the new item
        then scored high after every history: on MovieLens-100k 83-99 % of the lists named
        one of the 66 new items; BENCHMARKS.md "Online learning", session 9); GRU4Rec's
        output bias at the other items' mean; such an item takes no ``new_lr`` boost. An
        item given a row earlier in the stream whose text arrived or changed since gets the
        new vector. Returns the slots started from their text (the others keep ``init``)."""
        module = self.model.module
        emb = module.item_emb
        vocab = self.model.vocab
        fresh = set(added)
        if len(self._from_text) < len(vocab):
            self._from_text = np.r_[self._from_text,
                                    np.zeros(len(vocab) - len(self._from_text), bool)]
        self._from_text[list(fresh)] = False  # a reused slot: the item before is gone
        late = [s for s in (vocab.index(i) for i in self.texts.take_changed())
                if s and s not in fresh and self.items.joined[s]]
        slots = list(added) + late
        if not slots:
            return set()
        ids = vocab.item_ids(slots)
        vecs = self.texts.vectors(ids)
        got = [(s, vecs[i]) for s, i in zip(slots, ids, strict=True) if i in vecs]
        if not got:
            return set()
        buf = emb.text_vectors
        idx = torch.tensor([s for s, _ in got], dtype=torch.long, device=buf.device)
        buf[idx] = torch.as_tensor(np.stack([v for _, v in got]), dtype=buf.dtype,
                                   device=buf.device)
        started = sorted(s for s, _ in got if s in fresh)
        if started:
            rows = torch.tensor(started, dtype=torch.long, device=buf.device)
            if emb.id_emb is not None:  # fused: the ID part of look-alike trained items
                from model_core.text.fusion import impute_id_rows

                n = emb.id_emb.weight.shape[0]
                donors = np.flatnonzero(~self.items.joined[:n])
                impute_id_rows(self.model, started, k=TEXT_NEIGHBOURS, donors=donors[donors > 0])
            bias = getattr(module, "out_bias", None)
            if bias is not None:
                bias[rows] = bias[_all_but(bias.shape[0], rows)].mean()
        self._from_text[started] = True
        self.texts.stats["started"] += len(started)
        self.texts.stats["refreshed"] += len(got) - len(started)
        return set(started)

    def _optimisers(self) -> list:
        if self._opts is None:
            module = self.model.module
            sparse_w = module.item_emb.sparse_weight
            emb = module.item_emb
            if emb.mode == "fused":
                # the text projection maps every item's text into the item space: a step on
                # a micro-batch moves all trained items at once (on MovieLens-100k it cost
                # 0.012 HR@20 against a frozen projection); the ID rows learn per item
                emb.text_proj.weight.requires_grad_(False)
            dense = [p for p in module.parameters() if p is not sparse_w and p.requires_grad]
            sch = self.schedule
            enc_lr = (sch.dense_lr or sch.lr) * sch.settled
            if enc_lr != sch.lr:  # item rows at lr, the encoder slower (or not at all)
                rows = {id(p) for p in module.item_emb.parameters()}
                rows.add(id(getattr(module, "out_bias", None)))
                groups = [{"params": [p for p in dense if id(p) in rows], "lr": sch.lr},
                          {"params": [p for p in dense if id(p) not in rows], "lr": enc_lr}]
                self._opts = [torch.optim.Adam([g for g in groups if g["params"] and g["lr"] > 0])]
            else:
                self._opts = [torch.optim.Adam(dense, lr=sch.lr)]
            if sparse_w is not None:
                self._opts.append(torch.optim.SparseAdam([sparse_w], lr=self.schedule.lr))
        return self._opts

    def _count_young(self, items: np.ndarray, adm) -> None:
        """Occurrences of each item born after training since it got its slot (a reused
        slot starts again from 0): the measure of :attr:`LearnSchedule.young`."""
        n = adm.grown_to
        if len(self._new_seen) < n:
            self._new_seen = np.r_[self._new_seen, np.zeros(n - len(self._new_seen), np.int64)]
        self._new_seen[np.asarray(adm.evicted, np.int64)] = 0
        born = items[self.items.is_new(items)]
        np.add.at(self._new_seen, born, 1)

    def _row_scales(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The item rows whose optimiser step is scaled, and by how much: items born after
        training and seen at most ``young`` times by ``new_lr``; the trained items' rows by
        ``settled`` (items given a row during the stream, young or not, take the whole step
        otherwise). None: no row is scaled."""
        sch = self.schedule
        emb = self.model.module.item_emb.id_emb
        if emb is None or (sch.new_lr == 1.0 and sch.settled == 1.0):
            return None
        n = emb.weight.shape[0]
        scale = np.ones(n)
        if sch.settled != 1.0:
            scale[~self.items.joined[:n]] = sch.settled
        if sch.new_lr != 1.0:
            seen = self._new_seen[:n]
            young = (seen > 0) & (seen <= sch.young) & self.items.born[: len(seen)]
            young[: len(self._from_text)] &= ~self._from_text[: len(young)]
            scale[: len(seen)][young] = sch.new_lr
        scale[0] = 1.0
        rows = np.flatnonzero(scale != 1.0)
        if not len(rows):
            return None
        return (torch.from_numpy(rows).to(emb.weight.device),
                torch.from_numpy(scale[rows]).to(emb.weight.device, emb.weight.dtype))

    @torch.no_grad()
    def _place_new(self, fresh: list[tuple[Snippet, int]], slots: list[int]) -> None:
        """Start each new item's row from its contexts in this update (``init`` context or
        prev, see :class:`~model_core.learn.schedule.LearnSchedule`); slots never seen after
        another event of their user keep the ``mean`` start."""
        module = self.model.module
        emb = module.item_emb.id_emb
        if emb is None or not slots or not fresh:
            return
        w = emb.weight
        batch, targets, _ = self._pad(fresh, False)
        place = torch.tensor(sorted(set(slots)), dtype=torch.long, device=w.device)
        hit = torch.isin(targets, place)
        if not bool(hit.any()):
            return
        known = _all_but(w.shape[0], place)
        tgt = targets[hit]
        n = w.shape[0]
        cnt = torch.bincount(tgt, minlength=n)
        got = place[cnt[place] > 0]
        if self.schedule.init == "prev":  # the rows of the items just before each occurrence
            out = module.item_emb.item_matrix()[batch.items[hit]]
            sums = torch.zeros(n, w.shape[1], dtype=out.dtype, device=w.device)
            sums.index_add_(0, tgt, out)
            w[got] = (sums[got] / cnt[got].unsqueeze(1).to(out.dtype)).to(w.dtype)
            return
        h_all = module.encode(batch.items, batch.lengths, batch.actions, batch.gaps)
        out = h_all[hit]
        bias = getattr(module, "out_bias", None)
        mat = module.item_emb.item_matrix()
        b_known = bias[known].mean() if bias is not None else out.new_zeros(())
        # how a true next item scores in its context: the place quantile of the scores at
        # this update's positions whose target is a known item
        kpos = (targets > 0) & ~hit
        if bool(kpos.any()):
            y = targets[kpos]
            t_all = ((h_all[kpos] * mat[y]).sum(-1) + (bias[y] if bias is not None else 0.0))
            t_score = torch.quantile(t_all, self.schedule.place)
        else:
            t_score = None
        # the direction that sets its contexts apart: their output vectors less (1 - r) times
        # the update's mean output vector, r = the share of the update's targets born after
        # training. The mean direction scores an item high after every history; a new item
        # keeps as much of it as new items, as a group, are the next item (Taobao's head log:
        # r ~0.77, most of it; YooChoose: r ~0.006, none, or new items crowd the lists of
        # every session; BENCHMARKS.md "Online learning")
        valid = targets > 0
        born = float(self.items.is_new(targets[valid].cpu().numpy()).mean())
        common = (1.0 - born) * h_all[valid].mean(0)
        sums = torch.zeros(n, w.shape[1], dtype=out.dtype, device=w.device).index_add_(
            0, tgt, out - common)
        dirs = sums[got] / sums[got].norm(dim=1, keepdim=True).clamp_min(1e-12)
        # each new row: that direction, at the norm that makes it score, on average over its
        # contexts, as that true next item (at most the largest known norm)
        along = torch.zeros(n, dtype=out.dtype, device=w.device).index_add_(
            0, tgt, (out * dirs[torch.searchsorted(got, tgt)]).sum(-1))[got] / cnt[got]
        norms = mat[known].norm(dim=1)
        if t_score is None:
            scale = norms.mean().expand(len(got))
        else:
            scale = ((t_score - b_known) / along.clamp_min(1e-6)).clamp(0.0, float(norms.max()))
        w[got] = (dirs * scale.unsqueeze(1)).to(w.dtype)
        if bias is not None:
            bias[got] = b_known

    def _gradient_steps(self, touched: dict[str, int], added: Sequence[int] = ()) -> float | None:
        sch = self.schedule
        keep = self.max_len + 1
        fresh: list[tuple[Snippet, int]] = []  # (window, how many of its last targets are new)
        for user, n_new in touched.items():
            seq = self.users[user]
            if len(seq.items) >= 2:
                fresh.append((seq.snippet(keep), n_new))
        if not fresh:
            return None
        model = self.model
        module = model.module
        if sch.init in ("context", "prev"):
            self._place_new(fresh, list(added))
        opts = self._optimisers()
        scaled = self._row_scales()
        train_actions = bool(model.trained_actions and module.action_head is not None)
        counts = np.bincount(np.concatenate([s.items for s, _ in fresh]), minlength=len(model.vocab))
        sampler = NegativeSampler(model.vocab.n_items, counts, float(module.sample_alpha),
                                  model.device, sch.seed + self.n_updates)
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sch.seed * 1_000_003 + self.n_updates)
            module.train(bool(sch.dropout))
            try:
                for step in range(sch.steps):
                    lo = (step * sch.batch_size) % len(fresh)
                    part = fresh[lo: lo + sch.batch_size]
                    old = self.replay.sample(int(round(sch.replay_ratio * len(part))))
                    rows = part + [(s, len(s.items) - 1) for s in old]
                    batch, targets, tacts = self._pad(rows, train_actions)
                    loss, _ = module.loss(batch, targets, tacts, sampler)
                    for opt in opts:
                        opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if sch.grad_clip:
                        dense = [p for p in module.parameters() if p is not module.item_emb.sparse_weight]
                        torch.nn.utils.clip_grad_norm_(dense, sch.grad_clip)
                    before = self._rows_before(scaled)
                    for opt in opts:
                        opt.step()
                    self._rescale(scaled, before)
                    losses.append(float(loss.detach()))
            finally:
                module.eval()
        for snip, _ in fresh:
            self.replay.offer(snip)
        return float(np.mean(losses))

    def _rows_before(self, scaled) -> list | None:
        """The scaled rows and their output biases before an optimiser step."""
        if scaled is None:
            return None
        rows = scaled[0]
        module = self.model.module
        bias = getattr(module, "out_bias", None)
        return [module.item_emb.id_emb.weight[rows].detach().clone(),
                None if bias is None else bias[rows].detach().clone()]

    @torch.no_grad()
    def _rescale(self, scaled, before: list | None) -> None:
        """Scale the optimiser's step on those rows (and output biases), each by its own
        factor (:meth:`_row_scales`)."""
        if scaled is None:
            return
        rows, k = scaled
        module = self.model.module
        w = module.item_emb.id_emb.weight
        w[rows] = before[0] + k.unsqueeze(1) * (w[rows] - before[0])
        if before[1] is not None:
            b = module.out_bias
            b[rows] = before[1] + k * (b[rows] - before[1])

    def _pad(self, rows: Sequence[tuple[Snippet, int]], train_actions: bool):
        """Right-padded inputs (each window but its last event) and next-item targets, only
        at the last ``n_new`` positions of each row (the others are 0: no loss there)."""
        module = self.model.module
        use_a, use_g = module.inputs.uses_actions, module.inputs.uses_gaps
        rows = [(s, n) for s, n in rows if len(s.items) >= 2]
        width = max(len(s.items) - 1 for s, _ in rows)
        n = len(rows)
        items = np.zeros((n, width), np.int64)
        targets = np.zeros((n, width), np.int64)
        lengths = np.empty(n, np.int64)
        acts = np.zeros((n, width), np.int64) if use_a else None
        tacts = np.zeros((n, width), np.int64) if train_actions else None
        gaps = np.zeros((n, width), np.int64) if use_g else None
        for r, (s, n_new) in enumerate(rows):
            m = len(s.items) - 1
            items[r, :m] = s.items[:-1]
            t = s.items[1:].copy()
            t[: max(0, m - n_new)] = 0
            targets[r, :m] = t
            lengths[r] = m
            if use_a:
                acts[r, :m] = s.actions[:-1] + 1
            if tacts is not None:
                tacts[r, :m] = np.where(t > 0, s.actions[1:] + 1, 0)
            if use_g:
                gaps[r, :m] = gap_buckets(s.timestamps_ms)[:-1]
        dev = self.model.device

        def t(x):
            return None if x is None else torch.from_numpy(x).to(dev)

        return Padded(t(items), t(lengths), t(acts), t(gaps)), t(targets), t(tacts)


def _all_but(n: int, rows: torch.Tensor) -> torch.Tensor:
    """[n] mask of the item slots other than padding (0) and ``rows``."""
    mask = torch.ones(n, dtype=torch.bool, device=rows.device)
    mask[0] = False
    mask[rows] = False
    return mask


def check_texts(model, texts: ItemTexts) -> None:
    """Item texts need a neural model that represents items by text, with the same encoder
    width it was trained with."""
    from model_core.exceptions import ModelCoreError

    emb = getattr(getattr(model, "module", None), "item_emb", None)
    if emb is None or emb.mode == "id":
        raise ModelCoreError(f"item texts start new items only in a model trained with "
                             f"--text-mode text or fused; {model.name} uses ID rows only")
    if texts.dim != emb.text_dim:
        raise ModelCoreError(f"the item texts' encoder gives {texts.dim}-d vectors but the "
                             f"model was trained on {emb.text_dim}-d text vectors")


def _triplets(m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of every entry of a model's CSR item table."""
    rows = np.repeat(np.arange(len(m.indptr) - 1, dtype=np.int64), np.diff(m.indptr))
    return rows, m.indices.astype(np.int64), m.data.astype(np.float64)


__all__ = ["INCREMENTAL", "LEARNABLE", "OnlineLearner", "Update", "check_learnable",
           "check_texts"]
