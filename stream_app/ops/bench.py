"""``seqstream bench``: streaming throughput and latency, side by side, in one invocation.

Every variant reads the same generated events from one input topic on one embedded broker,
each in a fresh child process (clean RSS and event loop) with its own consumer group and
output topic::

    raw            plain aiokafka consume -> produce loop (the ceiling of any Kafka app here)
    faust_naive    Faust agent, one ``await send`` + one table update per event
    faust_ceiling  Faust agent over ``take_events`` that does nothing (one send per batch)
    faust_ceiling_tb  the same over seqstream's ``take_batches`` (the batching the worker uses)
    seqstream_noop seqstream's own worker (``create_app`` + ``run_worker``) with a no-op model
    model_<name>   the model's batched ``predict_topk`` over the same sequences, no Kafka
    seqstream_<name>  ``seqstream worker --model CKPT`` (GRU4Rec, SASRec), full-catalogue top-K

Both Faust variants get ``faust.App`` options from :func:`stream_app.worker.app.app_options`, the
tuning seqstream itself runs with. The neural models are **randomly initialised** (throughput
does not depend on the weights) and saved as real checkpoints, so their runs are exactly
``seqstream worker --model DIR``.

Each Kafka variant runs two phases: (a) **max throughput**: it drains the pre-loaded events
(rate = outputs between its first and last output / the time between them); (b) **half
load**: the parent produces the next events paced at half that rate, and end-to-end latency
is output message time minus input send time. ``--json`` prints one JSON object on the last
line (ratios as in issue 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from model_core.predictor import SequenceBatch, TopK
from model_core.vocab import ItemVocab
from schemas.actions import ACTIONS
from schemas.event import Event
from schemas.exceptions import SeqstreamError

KAFKA_VARIANTS = ("raw", "faust_naive", "faust_ceiling", "faust_ceiling_tb", "seqstream_noop")
CEILINGS = ("faust_ceiling", "faust_ceiling_tb")  # one output per batch: {"n": .., "ts": [..]}
NEURAL = ("gru4rec", "sasrec")
ALL_VARIANTS = (*KAFKA_VARIANTS, *(f"model_{m}" for m in NEURAL),
                *(f"seqstream_{m}" for m in NEURAL))
START_MS = 1_704_067_200_000


@dataclass
class BenchConfig:
    events: int = 100_000
    items: int = 50_000
    device: str = "cpu"
    quick: bool = False
    variants: tuple[str, ...] = ALL_VARIANTS
    batch_size: int = 2000
    batch_wait_ms: int = 50
    top_k: int = 20
    max_seq_len: int = 50
    partitions: int = 4
    paced_s: float = 8.0  # length of the half-load phase
    paced_rate: float | None = None  # pace at this many events/s instead of half the drain rate
    seed: int = 0
    work_dir: str | None = None

    @classmethod
    def quick_config(cls, **kw) -> BenchConfig:
        # batches of 250: a smoke test's few events still make several batches (a rate
        # needs outputs at more than one instant)
        base = dict(events=5000, items=2000, quick=True, paced_s=2.0, batch_size=250)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)

    @property
    def extra_events(self) -> int:
        """Events kept for the paced (half-load) phases."""
        return max(1000, self.events // 2)


# --------------------------------------------------------------------------- data
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


def percentiles_ms(values) -> dict[str, float | None]:
    a = np.asarray(values, dtype=np.float64)
    if not len(a):
        return {"p50": None, "p95": None, "p99": None}
    p = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p[0]), 1), "p95": round(float(p[1]), 1),
            "p99": round(float(p[2]), 1)}


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, in MiB (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a live process has used (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def self_peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


# --------------------------------------------------------------------------- Kafka helpers
async def _producer(bootstrap: str):
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                         max_request_size=8 << 20, acks=1)
    await p.start()
    return p


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
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
    prod = await _producer(bootstrap)
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

    prod = await _producer(bootstrap)
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


class Collector:
    """Reads an output topic from its beginning, as it grows, keeping (timestamp ms, value).

    The parent counts outputs by reading them: the embedded broker's ListOffsets answers the
    base offset of the last *batch* + 1, not the high watermark, so end offsets cannot count
    records there. Variants with one output per event are read once they have drained the
    pre-loaded events (:meth:`wait_until_quiet`), so that reading 100,000 records does not
    take CPU from the variant; the ceilings' few records are read as they come.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[int, bytes]] = []
        self.events = 0  # events the records stand for (a ceiling record holds many)
        self._c = None

    async def start(self, partitions: int) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                   max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        await self._c.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self._c.assign(tps)
        await self._c.seek_to_beginning(*tps)

    async def stop(self) -> None:
        if self._c is not None:
            await self._c.stop()

    async def wait_until_quiet(self, timeout_s: float, quiet_s: float = 1.0,
                               alive=lambda: True) -> None:
        """Wait, without reading records, until the topic holds records and has not grown for
        ``quiet_s`` (end offsets polled: cheap for the parent, which shares the machine with
        the variant; a downstream consumer would run elsewhere). The embedded broker's end
        offsets lag by a batch, so they tell growth, not the count: :meth:`collect` reads
        (and counts) the records afterwards."""
        tps = list(self._c.assignment())
        deadline = time.monotonic() + timeout_s
        last_total, last_change, grown = None, time.monotonic(), False
        while time.monotonic() < deadline and alive():
            total = sum((await self._c.end_offsets(tps)).values())
            now = time.monotonic()
            if total != last_total:
                grown = grown or last_total is not None or total > 0
                last_total, last_change = total, now
            elif grown and now - last_change >= quiet_s:
                return
            await asyncio.sleep(0.25)

    async def collect(self, expect: int | None, timeout_s: float, idle_s: float = 2.0,
                      alive=lambda: True, busy=lambda: False) -> int:
        """Until ``expect`` events are out or (``expect`` None) none came for ``idle_s``
        after the first one (and ``busy()`` is false)."""
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        start_n = self.events
        while time.monotonic() < deadline:
            got = await self._c.getmany(timeout_ms=200, max_records=50_000)
            for msgs in got.values():
                for m in msgs:
                    self.records.append((m.timestamp, m.value))
                    self.events += _events_in(m.value)
            if got:
                last = time.monotonic()
            if expect is not None and self.events >= expect:
                return self.events
            if (expect is None and self.events > start_n and not busy()
                    and time.monotonic() - last >= idle_s):
                return self.events
            if not alive():
                raise RuntimeError(f"the variant's process exited ({self.events} events out)")
        raise TimeoutError(f"{self.topic}: {self.events} events out after {timeout_s:.0f} s "
                           f"(expected {expect})")


def _events_in(value: bytes) -> int:
    if value[:5] == b'{"n":':
        return int(value[5:value.index(b",")])
    return 1


# --------------------------------------------------------------------------- children
async def _raw_passthrough(settings) -> None:
    """Plain aiokafka loop: poll a batch, ``send`` every record, wait for the acks."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from stream_app.worker.process import READY_MARK

    boot = settings.bootstrap_servers
    src, dst = settings.topic("events"), settings.topic("predictions")
    cons = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False,
                            auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
                            fetch_max_wait_ms=max(5, min(settings.batch_wait_ms, 500)))
    prod = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=5, max_batch_size=1 << 20)
    await cons.start()
    await prod.start()
    await cons.topics()
    parts = cons.partitions_for_topic(src) or set()
    tps = [TopicPartition(src, p) for p in sorted(parts)]
    cons.assign(tps)
    await cons.seek_to_beginning(*tps)
    print(f"{READY_MARK} partitions={sorted(parts)} model=raw", flush=True)
    try:
        while True:
            got = await cons.getmany(timeout_ms=100, max_records=settings.batch_size)
            futs = []
            for tp, msgs in got.items():
                for m in msgs:
                    futs.append(await prod.send(dst, m.value, key=m.key, partition=tp.partition))
            if futs:
                await asyncio.gather(*futs)
    finally:
        await cons.stop()
        await prod.stop()


def _faust_variant(settings, variant: str) -> None:
    """A plain Faust app with seqstream's tuning (``app_options``) and one agent."""
    import faust

    from stream_app.kafka.faust_compat import FaustApp, fetch_wait_ms, tune_fetch_wait
    from stream_app.worker.app import app_options
    from stream_app.worker.process import READY_MARK

    app = FaustApp(settings.app_id, **app_options(settings))
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    src = app.topic(settings.topic("events"), partitions=settings.partitions, **raw)
    dst = app.topic(settings.topic("predictions"), partitions=settings.partitions, **raw)
    dumps, loads = orjson.dumps, orjson.loads

    if variant == "faust_naive":
        table = app.Table("naive-history", default=None, partitions=settings.partitions,
                          schema=faust.Schema(**raw))

        @app.agent(src, name="naive")
        async def naive(stream):  # the common way: per event, one table update, one send
            async for key, value in stream.items():
                ev = loads(value)
                old = table.get(key)
                hist = loads(old) if old else []
                hist.append(ev["item_id"])
                hist = hist[-settings.max_seq_len:]
                table[key] = dumps(hist)
                await dst.send(key=key, value=dumps({
                    "event_id": ev["event_id"], "user_id": ev["user_id"],
                    "items": hist[::-1][:settings.top_k]}))
    else:
        within = settings.batch_wait_ms / 1000.0

        if variant == "faust_ceiling_tb":
            from stream_app.worker.batching import take_batches

            def batches(stream):
                return take_batches(stream, settings.batch_size, within)
        else:
            def batches(stream):
                return stream.take_events(settings.batch_size, within=within)

        @app.agent(src, name="ceiling")
        async def ceiling(stream):  # batches, nothing done; one send per batch to measure
            async for batch in batches(stream):
                await dst.send(value=dumps({
                    "n": len(batch), "ts": [int(e.message.timestamp * 1000) for e in batch]}))

    @app.on_rebalance_complete.connect
    async def ready(sender, **kwargs):
        tune_fetch_wait(app, settings.batch_wait_ms)  # as seqstream's worker does
        wait = fetch_wait_ms(app)
        print(f"{READY_MARK} model={variant} fetch_max_wait_ms={wait}", flush=True)

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.execute_from_commandline()


def _model_only(cfg: dict) -> None:
    """(4) the model alone: ``predict_topk`` over the same rows, batch by batch, no Kafka."""
    import torch

    from model_core.checkpoint import load_model

    model = load_model(cfg["checkpoint"], device=cfg["device"])
    events = make_events(cfg["events"], cfg["items"], cfg["seed"])
    items, actions, ts = sequence_rows(events, model.vocab, cfg["max_seq_len"])
    b, k = cfg["batch_size"], cfg["top_k"]
    model.predict_topk(SequenceBatch(items[:64], actions[:64], ts[:64]), k)  # warm-up
    lat, total = [], 0.0
    cpu0 = time.process_time()
    for s in range(0, len(items), b):
        e = min(len(items), s + b)
        t0 = time.perf_counter()
        model.predict_topk(SequenceBatch(items[s:e], actions[s:e], ts[s:e]), k)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        total += dt
        lat.append(dt * 1000)
    cpu = time.process_time() - cpu0
    res = {"events": len(items), "seconds": round(total, 3), "cpu_s": round(cpu, 2),
           "events_per_cpu_s": round(len(items) / cpu, 1) if cpu > 0 else None,
           "events_per_s": round(len(items) / total, 1) if total else None,
           "batch_ms": percentiles_ms(lat), "peak_rss_mb": self_peak_rss_mb(),
           "torch_threads": torch.get_num_threads(), "device": str(model.device)}
    if model.device.type == "cuda":
        res["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["cuda_device"] = torch.cuda.get_device_name(model.device)
    Path(cfg["out"]).write_bytes(orjson.dumps(res))


def child_main(argv: list[str]) -> int:
    variant, cfg = argv[0], json.loads(argv[1])
    if variant == "model":
        _model_only(cfg)
        return 0
    from stream_app.settings import load_settings

    settings = load_settings()  # SEQSTREAM_* from the parent (WorkerProcess)
    if variant == "raw":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_raw_passthrough(settings))
    elif variant in ("faust_naive", *CEILINGS):
        _faust_variant(settings, variant)
    elif variant == "seqstream_noop":
        from stream_app.worker.app import run_worker

        run_worker(settings, NoopRecommender(catalogue_vocab(cfg["items"]), settings.top_k))
    else:
        raise SystemExit(f"unknown benchmark child {variant!r}")
    return 0


# --------------------------------------------------------------------------- parent
@dataclass
class RunResult:
    name: str
    events_per_s: float | None = None
    events: int = 0
    latency_ms: dict = field(default_factory=dict)  # at half load: p50/p95/p99
    paced_rate: float | None = None  # events/s offered in the half-load phase
    paced_achieved: float | None = None  # events/s actually sent
    paced_output_rate: float | None = None  # events/s out, half-load phase
    peak_rss_mb: float | None = None
    # events per CPU-second of the variant's process while it drained the events: less
    # sensitive than events/s to other work on a shared machine
    events_per_cpu_s: float | None = None
    state_bytes_per_user: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def _drain_rate(points: list[tuple[int, int]]) -> float | None:
    """points: (output time ms, events in that output). Events after the first output
    instant divided by the time from first to last output."""
    if not points:
        return None
    points.sort()
    t_first, t_last = points[0][0], points[-1][0]
    first = sum(n for t, n in points if t == t_first)
    total = sum(n for _, n in points)
    return (total - first) / ((t_last - t_first) / 1000.0) if t_last > t_first else None


def analyse(name: str, outputs: list[tuple[int, bytes]], drain_ids: set[str] | None,
            paced_sent: dict[str, float], paced_t0_ms: float) -> tuple[float | None, list, int]:
    """(drain rate, half-load latencies ms, outputs seen) from an output topic."""
    drain_pts: list[tuple[int, int]] = []
    lat: list[float] = []
    n = 0
    if name in CEILINGS:
        for ts, val in outputs:
            d = orjson.loads(val)
            n += d["n"]
            old = [t for t in d["ts"] if t < paced_t0_ms]
            if old:
                drain_pts.append((ts, len(old)))
            lat.extend(ts - t for t in d["ts"] if t >= paced_t0_ms)
        return _drain_rate(drain_pts), lat, n
    for ts, val in outputs:
        eid = orjson.loads(val).get("event_id")
        n += 1
        sent = paced_sent.get(eid)
        if sent is not None:
            lat.append(ts - sent)
        elif drain_ids is None or eid in drain_ids:
            drain_pts.append((ts, 1))
    return _drain_rate(drain_pts), lat, n


class Bench:
    def __init__(self, cfg: BenchConfig, log=print) -> None:
        self.cfg = cfg
        self.log = log
        self.tag = uuid.uuid4().hex[:6]
        self.work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="seqstream-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)

    # -- settings of one variant: shared input topic, own group, own outputs
    def settings_for(self, broker_url: str, variant: str, **over):
        from stream_app.settings import load_settings

        v = variant.replace("_", "-")
        return load_settings(
            broker_url=broker_url, topic_prefix="", topic_events=f"bench-{self.tag}.{v}.events",
            topic_predictions=f"bench-{self.tag}.{v}.out",
            topic_metrics=f"bench-{self.tag}.{v}.metrics",
            topic_dead_letters=f"bench-{self.tag}.{v}.dead", topic_alerts=f"bench-{self.tag}.{v}.alerts",
            topic_items=f"bench-{self.tag}.{v}.items", topic_control=f"bench-{self.tag}.{v}.control",
            app_id=f"bench-{self.tag}-{v}", partitions=self.cfg.partitions, web_port=0,
            data_dir=str(self.work / f"data-{v}"), session_timeout_s=6.0,
            heartbeat_interval_s=0.5, batch_size=self.cfg.batch_size,
            batch_wait_ms=self.cfg.batch_wait_ms, top_k=self.cfg.top_k,
            max_seq_len=self.cfg.max_seq_len, device=self.cfg.device, log_level="WARNING",
            **over)

    def run(self) -> dict:
        from stream_app.kafka.broker import EmbeddedBroker

        cfg = self.cfg
        t_start = time.monotonic()
        load0 = os.getloadavg()
        self.log(f"generating {cfg.events} + {cfg.extra_events} events over {cfg.items} items")
        events = make_events(cfg.events + cfg.extra_events, cfg.items, cfg.seed)
        records = [(e.user_id.encode(), e.to_json()) for e in events]
        drain, extra = records[:cfg.events], records[cfg.events:]
        drain_ids = {e.event_id for e in events[:cfg.events]}
        vocab = catalogue_vocab(cfg.items)
        runs: dict[str, RunResult] = {}
        ckpts = self._checkpoints(vocab) if any(
            v.startswith(("model_", "seqstream_")) and v != "seqstream_noop"
            for v in cfg.variants) else {}
        state = self._state_bytes(events[:cfg.events], vocab)
        with EmbeddedBroker(log_path=self.work / "broker.log") as broker:
            for variant in cfg.variants:
                try:
                    if variant.startswith("model_"):
                        runs[variant] = self._model_run(variant, ckpts[variant[6:]])
                    else:
                        runs[variant] = self._kafka_run(broker, variant, drain, drain_ids,
                                                        extra, ckpts.get(variant[10:]))
                except (RuntimeError, TimeoutError, OSError, SeqstreamError) as e:  # keep the rest
                    runs[variant] = RunResult(variant, note=f"failed: {str(e)[:500]}")
                self.log(_line(runs[variant]))
        for name, r in runs.items():
            if name.startswith("seqstream_"):
                r.state_bytes_per_user = state["bytes_at_max_len"]
            elif name == "faust_naive":
                r.state_bytes_per_user = state["naive_bytes_at_max_len"]
        return self._summary(runs, state, time.monotonic() - t_start, load0)

    # -- pieces
    def _checkpoints(self, vocab: ItemVocab) -> dict[str, str]:
        from model_core.checkpoint import save_model
        from model_core.models import create_model

        out = {}
        for name in NEURAL:
            if f"model_{name}" in self.cfg.variants or f"seqstream_{name}" in self.cfg.variants:
                d = self.work / f"ckpt-{name}"
                model = create_model(name, vocab, device="cpu", seed=0,
                                     max_len=self.cfg.max_seq_len)
                model.version = f"{name}-random-init"
                save_model(model, d, meta={"model_version": f"{name}-random-init"})
                out[name] = str(d)
        return out

    def _state_bytes(self, events: list[Event], vocab: ItemVocab) -> dict:
        """Run seqstream's own state code (no-op model) over the events: encoded sizes, and
        the in-process processing rate of the machinery without Kafka or Faust."""
        from stream_app.windows.aggregation import WindowAggregator
        from stream_app.worker.processor import BatchProcessor, RawRecord

        model = NoopRecommender(vocab, self.cfg.top_k)
        windows = WindowAggregator(ks=(10, 20), window_s=60, n_items=vocab.n_items,
                                   model_version=model.version)
        proc = BatchProcessor(model, max_len=self.cfg.max_seq_len, k=self.cfg.top_k,
                              windows=windows)
        now = int(time.time() * 1000)
        recs = [RawRecord(e.user_id.encode(), e.to_json(), "events", 0, i, now)
                for i, e in enumerate(events)]
        states: dict = {}
        b = self.cfg.batch_size
        t0 = time.process_time()
        for s in range(0, len(recs), b):
            out = proc.process(recs[s:s + b], states)
            for st in out.result.touched.values():
                st.encode()  # the table write of each touched user
        cpu = time.process_time() - t0
        sizes = np.array([len(st.encode()) for st in states.values()])
        # a user with a full window: the first max_len + 5 events, all given to one user
        m = self.cfg.max_seq_len
        probe = [Event(e.event_id, "probe-user", e.item_id, e.action, e.timestamp_ms)
                 for e in events[: m + 5]]
        probe_states: dict = {}
        proc.engine.process(probe, probe_states)
        full = probe_states["probe-user"]
        naive = len(orjson.dumps([vocab.item_id(int(i)) for i in full.items]))
        return {"users": len(states), "mean_bytes": round(float(sizes.mean()), 1),
                "max_bytes": int(sizes.max()),
                "bytes_at_max_len": len(full.encode()), "events_in_window": len(full),
                "naive_bytes_at_max_len": naive,
                "processor_events_per_cpu_s_no_kafka": round(len(recs) / cpu, 1) if cpu else None}

    def _model_run(self, variant: str, ckpt: str) -> RunResult:
        cfg = self.cfg
        out = self.work / f"{variant}.json"
        child_cfg = {"checkpoint": ckpt, "device": cfg.device, "events": cfg.events,
                     "items": cfg.items, "seed": cfg.seed, "max_seq_len": cfg.max_seq_len,
                     "batch_size": cfg.batch_size, "top_k": cfg.top_k, "out": str(out)}
        proc = subprocess.run([sys.executable, "-m", "stream_app.ops.bench", "--child", "model",
                               json.dumps(child_cfg)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{proc.stderr[-3000:]}")
        res = orjson.loads(out.read_bytes())
        return RunResult(variant, res["events_per_s"], res["events"],
                         latency_ms=res["batch_ms"], peak_rss_mb=res["peak_rss_mb"],
                         events_per_cpu_s=res["events_per_cpu_s"],
                         note="model alone, per micro-batch latency", extra=res)

    def _kafka_run(self, broker, variant: str, drain: list[tuple[bytes, bytes]],
                   drain_ids: set[str], extra: list[tuple[bytes, bytes]],
                   ckpt: str | None) -> RunResult:
        """One variant on its own input topic, pre-loaded with the same events."""
        from stream_app.kafka.topics import ensure_topics
        from stream_app.worker.process import WorkerProcess

        cfg = self.cfg
        settings = self.settings_for(broker.url, variant,
                                     **({"model_path": ckpt} if ckpt else {}))
        ensure_topics(settings, names=("predictions",))
        topic = settings.topic("events")
        asyncio.run(_create_topic(broker.bootstrap, topic, cfg.partitions))
        secs = asyncio.run(preload(broker.bootstrap, topic, drain))
        self.log(f"{variant}: pre-loaded {len(drain)} events into {topic} in {secs:.1f} s")
        if variant.startswith("seqstream_") and variant != "seqstream_noop":
            command = None  # exactly `seqstream worker --model CKPT`
        else:
            command = [sys.executable, "-m", "stream_app.ops.bench", "--child", variant,
                       json.dumps({"items": cfg.items})]
        worker = WorkerProcess(settings, self.work / f"{variant}.log", command=command,
                               name=variant)
        with worker:
            worker.wait_ready(120)
            return asyncio.run(self._measure(broker.bootstrap, settings, variant, drain_ids,
                                             extra, worker))

    async def _measure(self, bootstrap: str, settings, variant: str, drain_ids: set[str],
                       extra: list[tuple[bytes, bytes]], worker) -> RunResult:
        cfg = self.cfg
        per_event = variant not in CEILINGS
        col = Collector(bootstrap, settings.topic("predictions"))
        await col.start(cfg.partitions)
        try:
            # (a) drain the pre-loaded events: the variant's max rate
            cpu0 = proc_cpu_s(worker.proc.pid)
            if per_event:  # one output per event: read them once the variant is done
                await col.wait_until_quiet(timeout_s=900, alive=worker.alive)
            await col.collect(cfg.events if per_event else None, timeout_s=900,
                              alive=worker.alive)
            cpu1 = proc_cpu_s(worker.proc.pid)
            rate, _, n_drained = analyse(variant, col.records, drain_ids, {}, float("inf"))
            res = RunResult(variant, round(rate, 1) if rate else None, n_drained)
            if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
                res.events_per_cpu_s = round(n_drained / (cpu1 - cpu0), 1)
                res.extra["drain_cpu_s"] = round(cpu1 - cpu0, 2)
            if not rate:
                res.peak_rss_mb = peak_rss_mb(worker.proc.pid)
                res.note = "no outputs"
                return res
            # (b) the next events, paced at half that rate: end-to-end latency
            half = cfg.paced_rate or rate / 2.0
            n = int(min(len(extra), max(200, half * cfg.paced_s)))
            chunk = extra[:n]
            t0_ms = time.time() * 1000.0
            sender = asyncio.ensure_future(
                paced_send(bootstrap, settings.topic("events"), chunk, half))
            try:
                if per_event:  # read the outputs once the paced events are sent and out
                    await asyncio.wait_for(asyncio.shield(sender), timeout=60 + 2 * n / half)
                    await col.wait_until_quiet(timeout_s=120, alive=worker.alive)
                await col.collect(col.events + n if per_event else None,
                                  timeout_s=120 + 2 * n / half, alive=worker.alive,
                                  busy=lambda: not sender.done())
            except TimeoutError as e:  # report what came out rather than lose the run
                res.note = f"half-load phase incomplete: {e}"
            sent, achieved = await sender
            res.peak_rss_mb = peak_rss_mb(worker.proc.pid)
        finally:
            await col.stop()
        ids = [orjson.loads(v)["event_id"] for _, v in chunk]
        paced = dict(zip(ids, sent, strict=True))
        _, lat, _ = analyse(variant, col.records, drain_ids, paced, t0_ms)
        res.latency_ms = percentiles_ms(lat)
        res.paced_rate = round(half, 1)
        res.paced_achieved = round(achieved, 1)
        res.extra.update(paced_events=n, paced_outputs=len(lat))
        return res

    def _summary(self, runs: dict[str, RunResult], state: dict, seconds: float,
                 load0) -> dict:
        def rate(name):
            r = runs.get(name)
            return r.events_per_s if r else None

        def ratio(a, b):
            x, y = rate(a), rate(b)
            return round(x / y, 3) if x and y else None

        noop = runs.get("seqstream_noop")
        import torch

        out = {
            "config": asdict(self.cfg),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "loadavg_at_start": [round(x, 2) for x in load0],
                        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
            "seconds": round(seconds, 1),
            "runs": {k: asdict(v) for k, v in runs.items()},
            "state": state,
            "ratio_machinery_vs_faust_ceiling": ratio("seqstream_noop", "faust_ceiling"),
            # beside it: against a do-nothing agent over the batching the worker itself uses
            "ratio_machinery_vs_ceiling_take_batches": ratio("seqstream_noop",
                                                             "faust_ceiling_tb"),
            "ratio_machinery_vs_raw": ratio("seqstream_noop", "raw"),
            "ratio_model_path_gru4rec": ratio("seqstream_gru4rec", "model_gru4rec"),
            "ratio_model_path_sasrec": ratio("seqstream_sasrec", "model_sasrec"),
            "ratio_vs_naive_faust": ratio("seqstream_noop", "faust_naive"),
            "latency_p99_ms_at_half_load": (noop.latency_ms.get("p99")
                                            if noop and noop.latency_ms else None),
            "state_bytes_per_user": state["bytes_at_max_len"],
        }
        def cpu_ratio(a, b):
            x, y = (runs[a].events_per_cpu_s if a in runs else None,
                    runs[b].events_per_cpu_s if b in runs else None)
            return round(x / y, 3) if x and y else None

        # the same ratios from events per CPU-second of each variant's own process
        out["cpu_ratios"] = {
            "machinery_vs_faust_ceiling": cpu_ratio("seqstream_noop", "faust_ceiling"),
            "machinery_vs_raw": cpu_ratio("seqstream_noop", "raw"),
            "model_path_gru4rec": cpu_ratio("seqstream_gru4rec", "model_gru4rec"),
            "model_path_sasrec": cpu_ratio("seqstream_sasrec", "model_sasrec"),
            "vs_naive_faust": cpu_ratio("seqstream_noop", "faust_naive")}
        out["targets"] = {
            "ratio_machinery_vs_faust_ceiling": 0.8, "ratio_machinery_vs_raw": 0.25,
            "ratio_model_path_gru4rec": 0.7, "ratio_model_path_sasrec": 0.7,
            "ratio_vs_naive_faust": 3.0, "latency_p99_ms_at_half_load": 200,
            "state_bytes_per_user": 1024}
        return out


def _line(r: RunResult) -> str:
    lat = r.latency_ms or {}
    return (f"  {r.name:<18} {_fmt(r.events_per_s):>9} ev/s  p50 {_fmt(lat.get('p50'))} "
            f"p95 {_fmt(lat.get('p95'))} p99 {_fmt(lat.get('p99'))} ms"
            f"{'' if r.paced_rate is None else f' @ {r.paced_rate:.0f} ev/s'}"
            f"  rss {_fmt(r.peak_rss_mb)} MiB")


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def format_table(summary: dict) -> str:
    """A Markdown table of the runs and the ratios against their targets."""
    rows = ["| run | events/s | events/CPU-s | latency p50 / p95 / p99 ms (at half load) "
            "| half-load rate | peak RSS MiB | state bytes/user |",
            "|---|---:|---:|---|---:|---:|---:|"]
    for name, r in summary["runs"].items():
        lat = r.get("latency_ms") or {}
        rows.append(f"| {name} | {_fmt(r['events_per_s'])} | {_fmt(r.get('events_per_cpu_s'))} | "
                    f"{_fmt(lat.get('p50'))} / "
                    f"{_fmt(lat.get('p95'))} / {_fmt(lat.get('p99'))} | "
                    f"{_fmt(r.get('paced_rate'))} | {_fmt(r['peak_rss_mb'])} | "
                    f"{_fmt(r.get('state_bytes_per_user'))} |")
    rows += ["", "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    for key, target in summary["targets"].items():
        v = summary.get(key)
        lower_is_better = key in ("latency_p99_ms_at_half_load", "state_bytes_per_user")
        met = None if v is None else (v <= target if lower_is_better else v >= target)
        rows.append(f"| {key} | {'-' if v is None else v} | {'≤' if lower_is_better else '≥'} "
                    f"{target} | {'-' if met is None else ('yes' if met else 'no')} |")
    if summary.get("ratio_machinery_vs_ceiling_take_batches") is not None:
        rows.append("| (beside it) ratio_machinery_vs_ceiling_take_batches | "
                    f"{summary['ratio_machinery_vs_ceiling_take_batches']} | | |")
    cr = summary.get("cpu_ratios") or {}
    rows += ["", "per CPU-second: " + ", ".join(f"{k} {v}" for k, v in cr.items())]
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("use `seqstream bench` (this module's own entry runs benchmark children)")
