"""The benchmark run: its configuration, one run per variant, and the summary with ratios."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from model_core.vocab import ItemVocab
from schemas.event import Event
from schemas.exceptions import SeqstreamError
from stream_app.ops.bench.outputs import Collector, analyse
from stream_app.ops.bench.process_stats import peak_rss_mb, percentiles_ms, proc_cpu_s
from stream_app.ops.bench.table import line
from stream_app.ops.bench.variants import ALL_VARIANTS, CEILINGS, NEURAL
from stream_app.ops.bench.workload import (
    NoopRecommender,
    catalogue_vocab,
    create_topic,
    make_events,
    paced_send,
    preload,
)


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
                self.log(line(runs[variant]))
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
        asyncio.run(create_topic(broker.bootstrap, topic, cfg.partitions))
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
