"""The benchmark's variants: what each child process runs.

``python -m stream_app.ops.bench --child VARIANT CONFIG_JSON`` calls :func:`child_main`; the
``seqstream_<model>`` variants run ``seqstream worker`` itself and have no child code here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import orjson

from model_core.predictor import SequenceBatch
from stream_app.ops.bench.process_stats import percentiles_ms, self_peak_rss_mb
from stream_app.ops.bench.workload import (
    NoopRecommender,
    catalogue_vocab,
    make_events,
    sequence_rows,
)

KAFKA_VARIANTS = ("raw", "faust_naive", "faust_ceiling", "faust_ceiling_tb", "seqstream_noop")
CEILINGS = ("faust_ceiling", "faust_ceiling_tb")  # one output per batch: {"n": .., "ts": [..]}
NEURAL = ("gru4rec", "sasrec")
ALL_VARIANTS = (*KAFKA_VARIANTS, *(f"model_{m}" for m in NEURAL),
                *(f"seqstream_{m}" for m in NEURAL))


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
    """The model alone: ``predict_topk`` over the same rows, batch by batch, no Kafka."""
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
