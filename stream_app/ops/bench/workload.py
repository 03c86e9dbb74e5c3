"""The benchmark's workload: generated events, the catalogue, a no-op model, and sending the
events to a topic (all at once, or paced)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from model_core.predictor import SequenceBatch, TopK
from model_core.vocab import ItemVocab
from schemas.actions import ACTIONS
from schemas.event import Event

START_MS = 1_704_067_200_000


def make_events(n: int, n_items: int, seed: int = 0) -> list[Event]:
    """``n`` events in time order: Zipf(0.9) item popularity, ``n // 40`` users, the action
    mix of a shop (views dominate), 1..40 ms apart. Vectorised, so 150k events take about a
    second (``model_core.datasets.synth.generate`` is richer but takes half a minute here)."""
    rng = np.random.default_rng(seed)
    n_users = max(5, n // 40)
    users = rng.integers(0, n_users, n)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    pop /= pop.sum()
    perm = rng.permutation(n_items)
    items = perm[rng.choice(n_items, size=n, p=pop)]
    actions = rng.choice(len(ACTIONS), size=n, p=[0.6, 0.25, 0.08, 0.04, 0.03])
    ts = START_MS + np.cumsum(1 + rng.integers(0, 40, n))
    return [Event(f"b{seed}:{i}", f"u{u}", f"i{it}", ACTIONS[a], int(t))
            for i, (u, it, a, t) in enumerate(zip(users.tolist(), items.tolist(),
                                                  actions.tolist(), ts.tolist(), strict=True))]


def catalogue_vocab(n_items: int) -> ItemVocab:
    """The whole catalogue ``i0 .. i{n-1}`` (full-catalogue scoring over ``n_items``)."""
    return ItemVocab(f"i{i}" for i in range(n_items))


class NoopRecommender:
    """A :class:`~model_core.predictor.Recommender` that returns a fixed top-K at once.

    With it, a seqstream run measures the streaming machinery alone (parse, state, prequential
    scoring, windows, encoding, Kafka) and none of the model.
    """

    name = "noop"

    def __init__(self, vocab: ItemVocab, k: int = 20) -> None:
        self.vocab = vocab
        self.version = "noop-bench"
        k = max(1, min(k, vocab.n_items))
        self._items = np.arange(1, k + 1, dtype=np.int64)
        self._scores = np.linspace(1.0, 0.5, k, dtype=np.float32)
        self._probs = np.full(len(ACTIONS), 1.0 / len(ACTIONS), dtype=np.float32)

    def score(self, batch: SequenceBatch) -> np.ndarray:
        out = np.zeros((len(batch), len(self.vocab)), dtype=np.float32)
        out[:, 0] = -np.inf
        out[:, self._items] = self._scores
        return out

    def predict_topk(self, batch: SequenceBatch, k: int, exclude_history: bool = False) -> TopK:
        b = len(batch)
        return TopK(np.tile(self._items[:k], (b, 1)), np.tile(self._scores[:k], (b, 1)),
                    np.tile(self._probs, (b, 1)))


def sequence_rows(events: list[Event], vocab: ItemVocab, max_len: int):
    """For each event, its user's last ``max_len`` items/actions/times after that event."""
    from schemas.actions import action_index

    hist: dict[str, tuple[list, list, list]] = {}
    items, actions, ts = [], [], []
    index = vocab.index
    for ev in events:
        h = hist.setdefault(ev.user_id, ([], [], []))
        h[0].append(index(ev.item_id))
        h[1].append(action_index(ev.action))
        h[2].append(ev.timestamp_ms)
        items.append(np.asarray(h[0][-max_len:], dtype=np.int32))
        actions.append(np.asarray(h[1][-max_len:], dtype=np.uint8))
        ts.append(np.asarray(h[2][-max_len:], dtype=np.int64))
    return items, actions, ts


# --------------------------------------------------------------------------- sending
async def producer(bootstrap: str):
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                         max_request_size=8 << 20, acks=1)
    await p.start()
    return p


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def preload(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Send all records (batched); returns seconds taken."""
    from stream_app.kafka.publisher import BatchPublisher

    t0 = time.monotonic()
    prod = await producer(bootstrap)
    try:
        pub = BatchPublisher(prod)
        for s in range(0, len(records), 20_000):
            await pub.publish(topic, records[s:s + 20_000])
    finally:
        await prod.stop()
    return time.monotonic() - t0


async def paced_send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                     rate: float, tick_s: float = 0.005) -> tuple[list[float], float]:
    """Send ``records`` at ``rate`` per second; returns each record's send time (epoch ms)
    and the achieved rate. Every ``tick_s`` the records due are handed to the producer as one
    batch per partition (key-hash partitioning, as the pre-load), without waiting for acks:
    a load generator that costs little CPU on the machine it shares with the variant."""
    from stream_app.kafka.publisher import BatchPublisher

    prod = await producer(bootstrap)
    pub = BatchPublisher(prod)
    sent_ms: list[float] = []
    pending = []
    try:
        t0 = time.monotonic()
        n = 0
        while n < len(records):
            due = min(len(records), int((time.monotonic() - t0) * rate) + 1)
            if due > n:
                now_ms = time.time() * 1000.0
                sent_ms.extend([now_ms] * (due - n))
                pending += await pub.enqueue(topic, records[n:due])
                n = due
            await asyncio.sleep(tick_s)
        elapsed = time.monotonic() - t0
        await pub.wait(pending)
    finally:
        await prod.stop()
    return sent_ms, (len(records) / elapsed if elapsed > 0 else 0.0)
