"""``seqstream bench --serving``: the serving endpoints under load, beside the stream.

One run, side by side, on an embedded broker and one real worker per model:

1. **aiohttp baseline** — a bare aiohttp handler (a fixed JSON answer) in its own process,
   asked by the same client as the worker (closed loop, ``concurrency`` requests in flight):
   the web stack's limit on this machine, client included.
2. Per model (GRU4Rec, SASRec; random-init weights: the cost of a call does not depend on
   training): the worker's **maximum** events/s (a backlog of ``max_events`` replayed at
   once, rate from the first to the last prediction), then three phases of ``phase_s``
   seconds each with the stream paced at **half** that maximum:
   - the stream alone (its events/s: the base of the ratio),
   - ``GET /v1/users/{u}/recommendations?k=20`` at ``request_rate`` requests/s,
   - ``POST /v1/rank`` with ``candidates`` items at ``request_rate`` requests/s.
   Requests are sent open loop (each at its scheduled time, latency measured from that
   time, so a stall counts against every request it delays) for users with a live sequence.

The broker, the worker, the event producer and the HTTP client share this machine's cores:
the figures are those of the whole, not of the worker alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from schemas.actions import ACTIONS
from schemas.event import Event

MODELS = ("gru4rec", "sasrec")


@dataclass
class ServingBenchConfig:
    items: int = 50_000  # catalogue (full-catalogue scoring over it)
    users: int = 2_000
    max_events: int = 20_000  # backlog for the maximum rate
    phase_s: float = 12.0
    request_rate: float = 200.0  # requests/s in the request phases
    candidates: int = 100  # per rank request
    k: int = 20  # per recommendation request
    concurrency: int = 32  # the aiohttp baseline's requests in flight
    batch_size: int = 2000
    batch_wait_ms: int = 50
    max_seq_len: int = 50
    models: tuple[str, ...] = MODELS
    #: where request batches run (serve_model_thread): each model runs once per mode
    threads: tuple[str, ...] = ("shared", "own")
    #: the request phases after "stream_only"
    request_phases: tuple[str, ...] = ("recommendations", "rank")
    #: the HTTP client in a process of its own (not beside the producer's and the
    #: prediction counter's threads, whose Python holds this process's GIL)
    client_process: bool = True
    work_dir: str | None = None
    seed: int = 0

    @classmethod
    def quick_config(cls, **over) -> ServingBenchConfig:
        base = dict(items=2_000, users=300, max_events=3_000, phase_s=4.0, request_rate=50.0)
        return cls(**{**base, **{k: v for k, v in over.items() if v is not None}})


# --------------------------------------------------------------------------- data
def make_events(n: int, n_items: int, n_users: int, seed: int, start: int = 0) -> list[Event]:
    """``n`` events of ``n_users`` users over ``n_items`` items (Zipf 0.9 popularity), event
    times 1 ms apart from now (the worker refuses times far in the future)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    pop /= pop.sum()
    items = rng.permutation(n_items)[rng.choice(n_items, size=n, p=pop)]
    users = rng.integers(0, n_users, n)
    actions = rng.choice(len(ACTIONS), size=n, p=[0.6, 0.25, 0.08, 0.04, 0.03])
    t0 = int(time.time() * 1000) - n
    return [Event(f"s{seed}:{start + i}", f"u{u}", f"i{it}", ACTIONS[a], t0 + i)
            for i, (u, it, a) in enumerate(zip(users.tolist(), items.tolist(),
                                                actions.tolist(), strict=True))]


def _records(events: list[Event]) -> list[tuple[bytes, bytes]]:
    return [(e.user_id.encode(), e.to_json()) for e in events]


# --------------------------------------------------------------------------- measurement
def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50 and p99 in ms of latencies in seconds (the project's one percentile: nearest
    rank, :func:`model_core.metrics.percentiles`)."""
    from model_core.metrics import percentiles

    p50, p99 = percentiles(np.asarray(values, dtype=np.float64) * 1000.0, (50, 99))
    return {"p50": None if p50 is None else round(p50, 2),
            "p99": None if p99 is None else round(p99, 2)}


class PredictionCounter(threading.Thread):
    """Counts the messages of the predictions topic as they arrive (kafka-python, no
    group): ``count`` and the time of the last one."""

    def __init__(self, settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.count = 0
        self.last_at = 0.0
        self.first_at = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from stream_app.kafka.security import kafka_python_kwargs

        topic = self.settings.topic("predictions")
        c = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                          enable_auto_commit=False, **kafka_python_kwargs(self.settings))
        try:
            parts = None
            while not parts and not self._halt.is_set():
                parts = c.partitions_for_topic(topic)
                time.sleep(0.1)
            tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            while not self._halt.is_set():
                got = c.poll(timeout_ms=200, max_records=10_000)
                n = sum(len(v) for v in got.values())
                if n:
                    now = time.monotonic()
                    if not self.count:
                        self.first_at = now
                    self.count += n
                    self.last_at = now
        finally:
            c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class PacedProducer(threading.Thread):
    """Sends ``records`` at ``rate`` per second (ticks of 10 ms) until stopped or out."""

    def __init__(self, settings, records: list[tuple[bytes, bytes]], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.records, self.rate = settings, records, rate
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from stream_app.kafka.replay import make_producer

        topic = self.settings.topic("events")
        p = make_producer(self.settings)
        t0 = time.monotonic()
        try:
            while not self._halt.is_set() and self.sent < len(self.records):
                due = min(len(self.records), int((time.monotonic() - t0) * self.rate))
                for key, value in self.records[self.sent:due]:
                    p.send(topic, key=key, value=value)
                self.sent = max(self.sent, due)
                time.sleep(0.01)
            p.flush()
        finally:
            p.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


LOOP_LAG = "seqstream_event_loop_lag_seconds"


def scrape_buckets(port: int, name: str = LOOP_LAG) -> dict[float, float]:
    """The cumulative bucket counts (``le`` -> count) of histogram ``name`` from the worker's
    Prometheus endpoint on ``port``; {} when it does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[float, float] = {}
    prefix = f'{name}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, _, count = line[len(prefix):].partition('"} ')
            out[float(le)] = float(count)
    return out


def bucket_percentile_ms(before: dict[float, float], after: dict[float, float],
                         q: float) -> float | None:
    """The upper bound (ms) of the bucket that holds the ``q``-th percentile of what was
    observed between two scrapes (None: nothing observed, or the top bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    need = counts[-1] * q / 100.0
    for b, c in zip(bounds, counts, strict=True):
        if c >= need:
            return None if b == float("inf") else round(b * 1000.0, 2)
    return None


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``{"queue": 1.5, "app": 3.0}`` from ``queue;dur=1.5, app;dur=3.0`` (ms)."""
    out: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";dur=")
        try:
            out[name] = float(rest)
        except ValueError:
            continue
    return out


def latency_profile(lat_s: list[float], timings: list[dict[str, float]]) -> dict:
    """Where the time of the answered requests went, p50 and p99 of each part in ms:
    ``queue`` (waiting for a request batch and the model thread; ``thread``: the part of it
    after the batch was handed to the model thread, the rest is the event loop's), ``model``
    (the batch's model call), ``app`` (the handler, all of those included) and ``outside``
    (the latency the client measured minus ``app``: HTTP, the client, and the worker's event
    loop busy before the handler ran), from each answer's ``Server-Timing`` header."""
    rows = [(t, lat) for t, lat in zip(timings, lat_s, strict=True) if "app" in t]
    if not rows:
        return {}
    parts = {name: [t.get(name, 0.0) / 1000.0 for t, _ in rows]
             for name in ("queue", "thread", "model", "app")}
    parts["outside"] = [max(0.0, lat - t["app"] / 1000.0) for t, lat in rows]
    return {name: percentiles_ms(v) for name, v in parts.items()}


async def open_loop(make_request, rate: float, duration_s: float) -> dict:
    """``make_request(session, i)`` (an awaitable of the status, or of (status, the
    ``Server-Timing`` header)) at ``rate`` per second for ``duration_s``: answered per second,
    latency percentiles from each scheduled time, errors, and where the time went
    (:func:`latency_profile`)."""
    import aiohttp

    n = int(rate * duration_s)
    lat: list[float] = []
    timings: list[dict[str, float]] = []
    errors: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05
        from stream_app.observe.loop_lag import LoopLag
        lag = LoopLag()
        probe = asyncio.ensure_future(lag.run())

        async def one(i: int) -> None:
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                status = await make_request(s, i)
            except Exception as e:  # noqa: BLE001 - counted, the run goes on
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                return
            status, header = status if isinstance(status, tuple) else (status, None)
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
                return
            lat.append(loop.time() - due)
            timings.append(parse_server_timing(header))

        await asyncio.gather(*(one(i) for i in range(n)))
        wall = loop.time() - t0
        probe.cancel()
    return {"requests": n, "answered": len(lat), "requests_per_s": round(len(lat) / wall, 1),
            "latency_ms": percentiles_ms(lat), "errors": errors,
            "profile_ms": latency_profile(lat, timings),
            "client_loop_lag_ms": lag.percentiles_ms()}


async def closed_loop(url: str, concurrency: int, duration_s: float) -> dict:
    """As many GETs of ``url`` as ``concurrency`` callers manage in ``duration_s``."""
    import aiohttp

    lat: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s

        async def caller() -> None:
            while loop.time() < end:
                t = loop.time()
                async with s.get(url) as r:
                    await r.read()
                lat.append(loop.time() - t)

        t0 = loop.time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = loop.time() - t0
    return {"requests_per_s": round(len(lat) / wall, 1), "latency_ms": percentiles_ms(lat)}


def request_maker(phase: str, base_url: str, users: list[str], bodies: list[bytes], k: int):
    """``make_request(session, i)`` of :func:`open_loop` for ``phase``: the i-th request
    (recommendations for a user, or a rank body), answered with (status, Server-Timing)."""

    async def rec(s, i):
        async with s.get(f"{base_url}/v1/users/{users[(i * 7919) % len(users)]}"
                         f"/recommendations?k={k}") as r:
            await r.read()
            return r.status, r.headers.get("Server-Timing")

    async def rank(s, i):
        async with s.post(f"{base_url}/v1/rank", data=bodies[i % len(bodies)],
                          headers={"Content-Type": "application/json"}) as r:
            await r.read()
            return r.status, r.headers.get("Server-Timing")

    return {"recommendations": rec, "rank": rank}[phase]


class ClientProcess:
    """:func:`open_loop` of one phase run by a Python process of its own, as a caller is
    (not beside the producer's and the prediction counter's threads, whose Python holds the
    bench's GIL). :meth:`start` returns once the client is ready, :meth:`go` starts it."""

    def __init__(self, base_url: str, phase: str, bodies: list[bytes], users: list[str],
                 cfg: ServingBenchConfig) -> None:
        self.spec = {"base_url": base_url, "phase": phase, "users": users, "k": cfg.k,
                     "bodies": [b.decode() for b in bodies], "rate": cfg.request_rate,
                     "duration_s": cfg.phase_s}
        self.timeout_s = cfg.phase_s * 10 + 60
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from stream_app.ops.bench_serving import client_main; "
             "client_main()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.proc.stdin.write(json.dumps(self.spec).encode() + b"\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != b"ready":
            self.proc.kill()
            raise RuntimeError(f"the HTTP client did not start: "
                               f"{self.proc.stderr.read().decode()[-400:]}")

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        try:
            out, err = self.proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if self.proc.returncode != 0:
            raise RuntimeError(f"the HTTP client failed: {err.decode()[-400:]}")
        return json.loads(out.decode().strip().splitlines()[-1])


def client_main() -> None:
    """The process of :class:`ClientProcess`: the spec, a line on stdin; "ready" on stdout,
    then a second line on stdin starts it; the result is the last line of stdout."""
    import aiohttp  # noqa: F401 - imported before "ready": not in the measured time

    spec = json.loads(sys.stdin.readline())
    req = request_maker(spec["phase"], spec["base_url"], spec["users"],
                        [b.encode() for b in spec["bodies"]], spec["k"])
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(asyncio.run(open_loop(req, spec["rate"], spec["duration_s"]))))


_BARE_SERVER = """
import sys
from aiohttp import web
async def h(request):
    return web.json_response({"user_id": request.match_info["u"], "items": ["i1", "i2"]})
app = web.Application()
app.router.add_get("/v1/users/{u}/recommendations", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


# --------------------------------------------------------------------------- the run
@dataclass
class ModelResult:
    model: str
    thread: str = "shared"  # serve_model_thread
    max_events_per_s: float | None = None
    paced_events_per_s: float | None = None
    phases: dict = field(default_factory=dict)  # name -> {stream_events_per_s, requests...}
    note: str = ""


class ServingBench:
    def __init__(self, cfg: ServingBenchConfig, log=print) -> None:
        self.cfg = cfg
        self.log = log
        self.tag = uuid.uuid4().hex[:6]
        self.work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="seqstream-bench-serving-"))
        self.work.mkdir(parents=True, exist_ok=True)

    def baseline(self) -> dict:
        from stream_app.kafka.broker import free_port, wait_for_port

        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", _BARE_SERVER, str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", port, 20):
                raise RuntimeError("the bare aiohttp server did not start")
            return asyncio.run(closed_loop(f"http://127.0.0.1:{port}/v1/users/u1/recommendations",
                                           self.cfg.concurrency, self.cfg.phase_s))
        finally:
            proc.terminate()
            proc.wait(10)

    def checkpoint(self, name: str, vocab) -> str:
        from model_core.checkpoint import save_model
        from model_core.models import create_model

        d = self.work / f"ckpt-{name}"
        model = create_model(name, vocab, device="cpu", seed=0, max_len=self.cfg.max_seq_len)
        model.version = f"{name}-random-init"
        save_model(model, d, meta={"model_version": model.version})
        return str(d)

    def run(self) -> dict:
        from model_core.vocab import ItemVocab
        from stream_app.kafka.broker import EmbeddedBroker

        cfg = self.cfg
        t_start = time.monotonic()
        load0 = os.getloadavg()
        self.log("aiohttp baseline (bare handler, closed loop, "
                 f"{cfg.concurrency} in flight, {cfg.phase_s:g} s)")
        base = self.baseline()
        self.log(f"  {base['requests_per_s']} requests/s, p99 {base['latency_ms']['p99']} ms")
        vocab = ItemVocab(f"i{i}" for i in range(cfg.items))
        results = {}
        with EmbeddedBroker(log_path=self.work / "broker.log") as broker:
            for name in cfg.models:
                ckpt = self.checkpoint(name, vocab)
                for thread in cfg.threads:
                    key = f"{name}/{thread}"
                    try:
                        results[key] = self.model_run(broker, name, ckpt, thread)
                    except (RuntimeError, TimeoutError, OSError) as e:
                        results[key] = ModelResult(name, thread, note=f"failed: {str(e)[:400]}")
                    self.log(f"  {key}: {json.dumps(asdict(results[key]))}")
        return summarise(cfg, base, results, time.monotonic() - t_start, load0)

    def model_run(self, broker, name: str, ckpt: str, thread: str) -> ModelResult:
        from stream_app.kafka.broker import free_port
        from stream_app.kafka.topics import ensure_topics
        from stream_app.settings import load_settings
        from stream_app.worker.process import WorkerProcess

        cfg = self.cfg
        port, metrics_port = free_port(), free_port()
        settings = load_settings(
            broker_url=broker.url, topic_prefix=f"bs{self.tag}.{name}.{thread}.",
            app_id=f"bs{self.tag}-{name}-{thread}", partitions=4, web_port=port,
            model_path=ckpt, serve_model_thread=thread, metrics_port=metrics_port,
            data_dir=str(self.work / f"data-{name}-{thread}"), session_timeout_s=6.0,
            heartbeat_interval_s=0.5, batch_size=cfg.batch_size,
            batch_wait_ms=cfg.batch_wait_ms, max_seq_len=cfg.max_seq_len, log_level="WARNING")
        ensure_topics(settings)
        result = ModelResult(name, thread)
        worker = WorkerProcess(settings, self.work / f"worker-{name}-{thread}.log",
                               name=f"{name}/{thread}")
        counter = PredictionCounter(settings)
        try:
            worker.start()
            worker.wait_ready(120)
            counter.start()
            # the maximum: a backlog, from the first send to the last prediction
            backlog = _records(make_events(cfg.max_events, cfg.items, cfg.users, cfg.seed))
            self.log(f"{name}/{thread}: maximum events/s over a backlog of {len(backlog)}")
            t0 = time.monotonic()
            PacedProducer(settings, backlog, rate=1e9).run()
            _wait(lambda: counter.count >= len(backlog), 300, "the backlog's predictions")
            result.max_events_per_s = round(len(backlog) / (counter.last_at - t0), 1)
            pace = result.max_events_per_s / 2
            result.paced_events_per_s = round(pace, 1)
            base_url = f"http://127.0.0.1:{port}"
            users = [f"u{i}" for i in range(cfg.users)]
            rng = np.random.default_rng(cfg.seed + 1)
            cand_lists = [[f"i{j}" for j in rng.choice(cfg.items, cfg.candidates,
                                                       replace=False).tolist()]
                          for _ in range(256)]
            bodies = [json.dumps({"user_id": users[i % len(users)],
                                  "items": cand_lists[i % len(cand_lists)]}).encode()
                      for i in range(1024)]

            rec, rank = (request_maker(phase, base_url, users, bodies, cfg.k)
                         for phase in ("recommendations", "rank"))
            n_phase = int(pace * cfg.phase_s * 1.2) + 100
            seed = cfg.seed + 10
            phases = [("stream_only", None)] + [(p, {"recommendations": rec, "rank": rank}[p])
                                                  for p in cfg.request_phases]
            for phase, req in phases:
                seed += 1
                recs = _records(make_events(n_phase, cfg.items, cfg.users, seed,
                                            start=seed * 10_000_000))
                self.log(f"{name}/{thread}: {phase}: stream at {pace:.0f} events/s"
                         + (f", {cfg.request_rate:g} requests/s" if req else ""))
                prod = PacedProducer(settings, recs, pace)
                prod.start()
                client = None
                if req is not None and cfg.client_process:
                    client = ClientProcess(base_url, phase, bodies, users, cfg)
                    client.start()
                time.sleep(1.0)  # the stream settles at its pace first
                if client is not None:
                    client.go()
                c0, t0 = counter.count, time.monotonic()
                lag0 = scrape_buckets(metrics_port)
                if req is None:
                    time.sleep(cfg.phase_s)
                    out = {}
                elif client is not None:
                    out = client.result()
                else:
                    out = asyncio.run(open_loop(req, cfg.request_rate, cfg.phase_s))
                events_s = (counter.count - c0) / (time.monotonic() - t0)
                lag = scrape_buckets(metrics_port)
                prod.stop()
                out["stream_events_per_s"] = round(events_s, 1)
                # the worker's event loop (how late it ran what was ready): a bucket bound
                out["worker_loop_lag_ms"] = {f"p{q}": bucket_percentile_ms(lag0, lag, q)
                                             for q in (50, 99)}
                result.phases[phase] = out
                # the backlog of this phase drains before the next starts
                _wait(lambda s=counter: time.monotonic() - s.last_at > 1.0, 60, "a quiet stream")
        finally:
            worker.stop(30)  # first: a failure below must not leave the worker running
            counter.stop()
        return result


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def summarise(cfg: ServingBenchConfig, base: dict, results: dict[str, ModelResult],
              seconds: float, load0) -> dict:
    """The run as one dict. ``by_thread``: per ``serve_model_thread`` mode, the worst over the
    models; the top-level keys are those of the settings' default mode."""
    from stream_app.settings import Settings

    by_thread = {t: _worst(cfg, [r for r in results.values() if r.thread == t])
                 for t in cfg.threads}
    per = {n: asdict(r) for n, r in results.items()}  # with the ratios _worst added
    default = Settings.model_fields["serve_model_thread"].default
    top = by_thread.get(default) or next(iter(by_thread.values()), {})
    return {
        "config": asdict(cfg), "models": per,
        "aiohttp_baseline_requests_per_s": base["requests_per_s"],
        "aiohttp_baseline": base,
        "serve_model_thread": default, **top, "by_thread": by_thread,
        "targets": {"rank_p99_ms": 25.0, "requests_per_s": cfg.request_rate,
                    "stream_events_ratio": 0.8},
        "seconds": round(seconds, 1), "cpus": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in load0],
    }


def _worst(cfg: ServingBenchConfig, results: list[ModelResult]) -> dict:
    rank_p99, rec_p99, rates, ratios = [], [], [], []
    for r in results:
        ph = r.phases
        alone = ph.get("stream_only", {}).get("stream_events_per_s")
        for name, acc in (("rank", rank_p99), ("recommendations", rec_p99)):
            p = ph.get(name)
            if not p:
                continue
            acc.append(p["latency_ms"]["p99"])
            rates.append(p["requests_per_s"])
            if alone:
                p["stream_events_ratio"] = round(p["stream_events_per_s"] / alone, 3)
                ratios.append(p["stream_events_ratio"])

    def worst(values, fn):
        values = [v for v in values if v is not None]
        return fn(values) if values else None

    return {"rank_p99_ms": worst(rank_p99, max), "recommend_p99_ms": worst(rec_p99, max),
            "requests_per_s": worst(rates, min), "stream_events_ratio": worst(ratios, min)}


def format_table(summary: dict) -> str:
    lines = [f"aiohttp bare handler: {summary['aiohttp_baseline_requests_per_s']} requests/s "
             "(closed loop, client on the same machine)",
             f"{'model/thread':<15} {'phase':<15} {'events/s':>9} {'ratio':>6} {'req/s':>7} "
             f"{'p50 ms':>7} {'p99 ms':>7}  errors"]
    for name, r in summary["models"].items():
        if r["note"]:
            lines.append(f"{name:<15} {r['note']}")
            continue
        lines.append(f"{name:<15} {'maximum':<15} {r['max_events_per_s']:>9}")
        for phase, p in r["phases"].items():
            lat = p.get("latency_ms", {})
            lines.append(f"{name:<15} {phase:<15} {p['stream_events_per_s']:>9} "
                         f"{p.get('stream_events_ratio', ''):>6} {p.get('requests_per_s', ''):>7} "
                         f"{_f(lat.get('p50'))} {_f(lat.get('p99'))}  {p.get('errors') or ''}")
            prof = p.get("profile_ms")
            if prof:  # where the time went (Server-Timing): p99 of each part
                p99 = {part: prof[part]["p99"] for part in prof}
                lines.append(f"    p99 ms: queue {p99['queue']} (thread {p99['thread']}) "
                             f"model {p99['model']} app {p99['app']} "
                             f"outside {p99['outside']}")
            loop_p99 = p.get("worker_loop_lag_ms", {}).get("p99")
            client = p.get("client_loop_lag_ms")
            if loop_p99 is not None or client:
                lines.append(f"    p99 ms: worker loop lag <= {loop_p99}"
                             + (f", client loop lag {client['p99']}" if client else ""))
    for thread, w in summary["by_thread"].items():
        lines.append(f"worst with serve_model_thread={thread}: rank p99 {w['rank_p99_ms']} ms,")
        lines.append(f"  recommendations p99 {w['recommend_p99_ms']} ms, {w['requests_per_s']} "
                     f"requests/s, stream events ratio {w['stream_events_ratio']}")
    lines.append("targets: rank p99 <= 25 ms at 200 requests/s, ratio >= 0.8")
    return "\n".join(lines)


def _f(x) -> str:
    return f"{x:>7}" if x is not None else f"{'':>7}"


def run(args) -> int:
    """``seqstream bench --serving`` (arguments from stream_app.commands.bench)."""
    import shutil
    import signal

    def on_term(signum, frame):  # stop the broker and the worker on SIGTERM too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    over = dict(items=args.items, work_dir=args.work_dir)
    cfg = (ServingBenchConfig.quick_config(**over) if args.quick
           else ServingBenchConfig(**{k: v for k, v in over.items() if v is not None}))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    bench = ServingBench(cfg, log=log)
    summary = bench.run()
    log(format_table(summary))
    log(f"finished in {summary['seconds']:.0f} s")
    if not args.work_dir and not any(r["note"] for r in summary["models"].values()):
        shutil.rmtree(bench.work, ignore_errors=True)
    elif not args.work_dir:
        log(f"logs in {bench.work}")
    if args.json:
        print(json.dumps(summary))
    return 0


__all__ = ["ServingBench", "ServingBenchConfig", "format_table", "run", "summarise"]
