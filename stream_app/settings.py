"""One frozen settings object for the whole stream side.

Built once at the edge from environment variables (``SEQSTREAM_<NAME>``, e.g.
``SEQSTREAM_BROKER_URL``) and CLI options (which win). Everything else receives the object
or explicit values from it — never ``sys.argv`` or an argparse namespace.

:func:`load_settings` reports bad values as a :class:`SettingsError` with one line per bad
variable (``SEQSTREAM_TOP_K='-1': expected an integer >= 1``), every one at once; the CLI
prints each as ``seqstream CMD: error: ...``. :func:`unknown_env_names` lists ``SEQSTREAM_*``
variables that are no setting (pydantic-settings ignores them, so a typo would silently
leave a default in force), each with the closest real name.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.event import MAX_ID_CHARS
from schemas.exceptions import SeqstreamError

ENV_PREFIX = "SEQSTREAM_"
#: ``SEQSTREAM_*`` variables that are read elsewhere, not settings (fault injection for tests,
#: the embedded broker's binary and log level): not reported as unknown.
OTHER_ENV_NAMES = frozenset({"SEQSTREAM_FAULTS", "SEQSTREAM_TANSU_BIN", "SEQSTREAM_BROKER_LOG"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # --- Kafka
    broker_url: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap, kafka://host:port[;host:port]")
    app_id: str = Field("seqstream", description="Faust app id = consumer group id")
    topic_prefix: str = Field("seqstream.", description="prefix of every topic name")
    topic_events: str = "events"
    topic_predictions: str = "predictions"
    topic_metrics: str = "metrics"
    topic_dead_letters: str = "dead-letters"
    topic_alerts: str = "alerts"
    topic_items: str = "items"
    topic_control: str = "control"
    topic_audit: str = "audit"
    partitions: int = Field(4, ge=1, description="partitions of topics seqstream creates")
    replication_factor: int = Field(1, ge=1)
    broker_lost_exit_s: float = Field(
        300.0, ge=0, description="a worker that cannot reach the broker for this long exits "
        "non-zero naming it (0 = wait forever); it is not ready meanwhile")
    session_timeout_s: float = Field(10.0, gt=0, description="consumer group session timeout")
    heartbeat_interval_s: float = Field(1.0, gt=0)

    # --- Kafka security (passed to Faust/aiokafka and to kafka-python clients)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: str | None = Field(
        None, description="file holding the SASL password (a mounted secret); not with sasl_password")
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    # --- micro-batching
    batch_size: int = Field(2000, ge=1, description="most events per micro-batch")
    batch_wait_ms: int = Field(50, ge=1, description="longest wait to fill a micro-batch")
    batch_retries: int = Field(
        3, ge=0, description="a batch whose model call raises is tried again this many times "
        "(pauses 0.1, 0.4, 1.6 s, ...); then its events go to dead-letters with the reason")

    # --- sequences and model
    max_seq_len: int = Field(50, ge=1, description="events kept per user")
    model_path: str | None = Field(None, description="checkpoint directory")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    top_k: int = Field(20, ge=1, description="items per published prediction")
    exclude_history: bool = False
    model_watch_dir: str | None = Field(
        None, description="hot swap: directory whose LATEST file names the checkpoint to serve")
    items_id_field: str = Field("item_id", description="items topic: field holding the item id")
    items_text_fields: str | None = Field(
        None, description="items topic: comma-separated text fields (default: all but the id)")
    model_root: str | None = Field(
        None, description="control-topic swaps load only checkpoints inside this directory "
        "(unset: control records are refused)")
    control_key_file: str | None = Field(
        None, description="file holding the HMAC key that signs control records (>= 16 "
        "bytes; unset: control records are ignored)")
    explain_share: float = Field(
        0.0, ge=0.0, le=1.0, description="share of predictions that carry explanations "
        "(sampled by event id; 0 = none): the past events behind each of the first 3 items")
    state_retention_s: float = Field(
        0.0, ge=0, description="a user's state is erased after this long without an event "
        "(event time; 0 = kept until erased with seqstream forget)")
    state_retention_sweep_s: float = Field(
        60.0, gt=0, description="how often the worker looks for expired user states")
    dead_letter_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=0, description="retention of the dead-letters topic when "
        "seqstream creates it (its records keep the original bytes; 0 = the broker's default)")
    pseudonym_key_file: str | None = Field(
        None, description="file holding the key that replaces user ids by keyed hashes at "
        "ingress (>= 16 bytes; unset: raw ids are kept)")
    control_max_age_s: float = Field(
        300.0, gt=0, description="control records older than this are refused")
    model_poll_s: float = Field(2.0, gt=0, description="hot swap: how often to check for a new model")

    # --- online learning (seqstream learner; stream_app.learner)
    learn_schedule: str = Field(  # = model_core.learn.schedule.DEFAULT_SCHEDULE (a test checks)
        "every=250", description="the learner's schedule (model_core.learn.LearnSchedule): "
        "every=N events an update, steps, lr, replay, max_items, init, seed, gate, margin "
        "(the validation gate), ...")
    learn_interval_s: float = Field(
        0.0, ge=0, description="also update after this many seconds with fewer than N new "
        "events (0 = only every N events; a time trigger makes versions depend on timing)")
    learn_keep: int = Field(5, ge=1, description="learner versions kept in the watched directory")
    learn_warm_path: str | None = Field(
        None, description="log the model was trained on: the learner's start-up history "
        "(user sequences, replay buffer); unset: it starts with none")
    learn_warm_format: str | None = Field(None, description="format of learn_warm_path (default: guessed)")
    learn_web_port: int = Field(
        0, ge=0, description="the learner's health and metrics server (GET /v1/live, "
        "/v1/ready, /metrics on web_host; 0 = off)")
    learn_max_lag: int = Field(
        100_000, ge=0, description="events the learner may be behind the end of the events "
        "topic before learn_lag_policy acts and a lag alert is sent (0 = no bound)")
    learn_lag_policy: Literal["subsample", "skip", "alert"] = Field(
        "subsample", description="behind the bound: subsample (learn a share max_lag/lag of "
        "the events, chosen by event id), skip (jump to the end of the topic), alert (only "
        "alert); skipped events are counted")
    learn_threads: int = Field(
        1, ge=0, description="torch threads of the learner (0 = torch's default, one per "
        "core): beside a worker on the same busy cores, a second thread that keeps being "
        "descheduled made a GRU4Rec update of 300 events take 1.8 s instead of 0.02 s")
    learn_lockstep: int = Field(
        0, ge=0, description="worker: hold each event past a boundary of N events until "
        "the learner's version for it is loaded (online == offline for one worker, one "
        "learner, a one-partition events topic and learn_schedule every=N; 0 = off)")
    learn_lockstep_wait_s: float = Field(
        120.0, gt=0, description="lockstep: longest wait for a version before the worker "
        "goes on with the model it has (logged)")

    # --- online evaluation
    metric_ks: tuple[int, ...] = (10, 20)
    window_s: int = Field(60, ge=1, description="tumbling window length, event time")
    hop_s: int = Field(0, ge=0, description="hopping windows every hop_s (0 = off)")
    hop_window_s: int = Field(300, ge=1, description="hopping window length")
    allowed_lateness_s: int = Field(5, ge=0)
    idle_close_s: float = Field(5.0, gt=0, description="close open windows after this long without input")
    max_future_ms: int = Field(
        86_400_000, ge=0, description="an event timed more than this after the wall clock is "
        "a dead letter (one far-future time would close every later window at once; 0 = no "
        "limit)")

    # --- alerts (stream_app.observe.alerts; published on the alerts topic)
    alert_hit_k: int = Field(10, ge=1, description="drift detectors watch hit@K")
    alert_drift_delta: float = Field(0.002, gt=0, lt=1, description="ADWIN confidence (smaller = fewer alerts)")
    alert_page_hinkley: bool = Field(False, description="also run Page-Hinkley on the hit")
    alert_latency_p99_ms: float = Field(0.0, ge=0, description="alert when a window's latency p99 is above (0 = off)")
    alert_dead_letter_rate: float = Field(0.0, ge=0, le=1, description="alert when a window's dead-letter rate is above (0 = off)")

    # --- state and ops
    data_dir: str = Field("./seqstream-data", description="worker data dir (tables, rocksdb)")
    store: str = Field("memory://", description="table store: memory:// or rocksdb://")
    recovery_consistency_check: bool = Field(
        True, description="refuse a RocksDB store whose saved changelog offset is past the "
        "topic's end (sound with verify_end_offsets on any broker)")
    verify_end_offsets: bool = Field(
        True, description="check the end offsets the broker reports for changelog partitions "
        "against a fetch's high watermark before table recovery (the embedded Tansu broker "
        "under-reports them; on Apache Kafka the check agrees and costs one fetch)")
    malloc_arenas: int = Field(
        2, ge=0, description="cap on glibc malloc arenas in the worker (0 = glibc's default "
        "of 8 per core; more arenas, more memory kept by idle threads)")
    fast_delivery: bool = Field(
        True, description="hand each consumed message to the stream directly when that "
        "completes at once (stream_app.kafka.delivery); false: Faust's loop, four asyncio tasks "
        "per message")
    faust_monitor: bool = Field(
        False, description="keep Faust's own Monitor sensor: per-event bookkeeping behind "
        "Faust's web /stats page (several calls per event); seqstream's Prometheus "
        "metrics (metrics_port) do not need it")
    metrics_port: int = Field(0, ge=0, description="Prometheus port (0 = off)")
    metrics_host: str = Field(
        "127.0.0.1", description="address the Prometheus endpoint listens on (no auth: "
        "loopback unless opened, e.g. 0.0.0.0)")
    web_port: int = Field(6066, ge=0)
    web_host: str = Field(
        "127.0.0.1", description="address Faust's web server (/v1/ready, /stats) listens on "
        "(no auth: loopback unless opened, e.g. 0.0.0.0)")
    web_advertised_url: str | None = Field(
        None, description="the URL other workers reach this worker's web server at (serving "
        "routes a user's request to the worker that owns its partition); unset: "
        "http://WEB_HOST:WEB_PORT, the host name when WEB_HOST is 0.0.0.0")

    # --- serving (stream_app.serve: recommendations and re-ranking on request)
    serve_token: SecretStr | None = Field(
        None, description="bearer token the serving endpoints require (unset: no "
        "authentication, and they answer only on a loopback web_host)")
    serve_max_candidates: int = Field(
        1000, ge=1, le=100_000, description="most candidates in one rank request")
    serve_max_k: int = Field(200, ge=1, description="most items one recommendation request may ask")
    serve_max_request_bytes: int = Field(
        256 * 1024, ge=1024, description="largest request body the serving endpoints read")
    serve_batch_size: int = Field(
        64, ge=1, description="most requests in one model call (requests are batched with "
        "each other and share the model thread with the stream's batches)")
    serve_batch_wait_ms: float = Field(
        1.0, ge=0, description="how long the first request of a batch waits for company")
    serve_model_thread: Literal["shared", "own"] = Field(
        "shared", description="shared: request batches run on the stream's model thread, "
        "ahead of the stream's waiting sub-batches (a request waits for at most one "
        "sub-batch, SERVE_STREAM_PART_ROWS); own: on a second thread, beside them (the two "
        "calls share the cores)")
    serve_request_turns: int = Field(
        1, ge=0, description="most request batches the model thread runs in a row while "
        "the stream's sub-batches wait (then one sub-batch, then requests again): the "
        "stream keeps its share of the thread under heavy requests (0: no bound, requests "
        "always first)")
    serve_stream_part_rows: int = Field(
        64, ge=0, description="the stream's model call runs in sub-batches of at most this "
        "many events, and a waiting request batch runs between two of them (0: one call per "
        "event batch); 16 halved rank's p99 in bench --serving but cut the stream's maximum "
        "events/s by about a quarter (more, smaller calls)")
    serve_timeout_s: float = Field(
        5.0, gt=0, description="a request not answered in this time gets a 503 (routing "
        "included)")
    serve_popular_half_life_events: int = Field(
        100_000, ge=1, description="cold start: item counts are halved every this many events")
    max_record_bytes: int = Field(
        512 * 1024, ge=16 * 1024, description="largest record the worker writes (window "
        "records, dead letters); Apache Kafka refuses records over message.max.bytes, 1 MiB "
        "by default")
    model_threads: int = Field(
        1, ge=0, description="torch intra-op threads of the worker's model calls (0 = "
        "torch's default, one per core): on two cores a second torch thread took the event "
        "loop's core, and serving's requests waited for the loop (bench --serving)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="seqstream's log level (Faust's and the Kafka client's stay at "
        "WARNING unless DEBUG)")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: timestamped lines; json: one JSON object per line")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v):
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _records_fit(self) -> Settings:
        """A user's state and a prediction grow with ``max_seq_len`` and ``top_k``: refuse
        settings whose largest such record would exceed ``max_record_bytes``."""
        state = 32 + 21 * self.max_seq_len + 4 * self.top_k  # model_core.sequence_state
        # ids of up to MAX_ID_CHARS characters, JSON-escaped at worst 6 bytes each
        id_bytes = 6 * MAX_ID_CHARS + 4
        prediction = self.top_k * (id_bytes + 24) + 2 * id_bytes + 1024
        worst = max(state, prediction)
        if worst > self.max_record_bytes:
            raise ValueError(
                f"max_seq_len={self.max_seq_len} and top_k={self.top_k} allow records of up to "
                f"{worst:,} bytes, over max_record_bytes={self.max_record_bytes:,}: lower them "
                "or raise max_record_bytes (below the broker's message.max.bytes)")
        return self

    # ------------------------------------------------------------------ derived
    def topic(self, name: str) -> str:
        """Full topic name of ``events`` / ``predictions`` / ... (prefix applied)."""
        return self.topic_prefix + getattr(self, f"topic_{name.replace('-', '_')}")

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` list for kafka-python / aiokafka."""
        out = []
        for part in self.broker_url.replace(",", ";").split(";"):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                out.append(part)
        return out

    def with_overrides(self, **overrides) -> Settings:
        """A copy with the given non-None values replaced (CLI options over environment)."""
        values = {k: v for k, v in overrides.items() if v is not None}
        if not values:
            return self
        return type(self)(**{**self.model_dump(), **values})


class SettingsError(SeqstreamError, ValueError):
    """Settings that cannot be used; ``problems`` holds one line per bad variable or option,
    each naming it, the value given and what is expected."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def load_settings(**overrides) -> Settings:
    """Settings from the environment, then ``overrides`` (None values ignored).

    Raises :class:`SettingsError` with one line per bad ``SEQSTREAM_*`` variable (all of them
    at once, not only the first pydantic meets), then one per bad override."""
    problems = environment_problems(os.environ)
    if problems:
        raise SettingsError(problems)
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as e:
        raise SettingsError(_error_lines(e, lambda name: f"setting {name}")) from None


class _InitOnly(Settings):
    """The same fields and validators, fed only from keyword arguments (no environment)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **other_sources):
        return (init_settings,)


def _env_fields(environ: Mapping[str, str]) -> dict[str, str]:
    """``{field name: raw value}`` of the ``SEQSTREAM_*`` variables that name a setting
    (matched without regard to case, as pydantic-settings matches them)."""
    names = {ENV_PREFIX + n.upper(): n for n in Settings.model_fields}
    return {names[k.upper()]: v for k, v in environ.items() if k.upper() in names}


def environment_problems(environ: Mapping[str, str]) -> list[str]:
    """One line per ``SEQSTREAM_*`` variable whose value the settings refuse (empty: all
    fine). Each variable is validated on its own terms, so every bad one is named — reading
    them through pydantic-settings stops at the first list-valued one it cannot decode."""
    raw = _env_fields(environ)
    problems, values = [], {}
    for name, text in raw.items():
        if _is_list(name):
            try:
                values[name] = json.loads(text)
            except ValueError:
                problems.append(_problem_line(ENV_PREFIX + name.upper(), name, text))
                continue
        else:
            values[name] = text
    try:
        _InitOnly(**values)
    except ValidationError as e:
        # checks across settings wait for the options, which may settle them
        fields = [x for x in e.errors() if x.get("loc")]
        if fields:
            problems += _error_lines(ValidationError.from_exception_data(e.title, fields),
                                     lambda name: ENV_PREFIX + name.upper(), raw)
    return problems


# settings that were replaced: the variable -> what to set instead (said in the warning)
RETIRED_ENV_NAMES = {
    "SEQSTREAM_LEARN_GATE_WINDOW": "gate=N in SEQSTREAM_LEARN_SCHEDULE",
    "SEQSTREAM_LEARN_GATE_MARGIN": "margin=M in SEQSTREAM_LEARN_SCHEDULE",
}


def unknown_env_names(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``(name, closest setting's variable or None)`` for each ``SEQSTREAM_*`` variable that
    is no setting: pydantic-settings ignores those, so a typo would silently leave the
    default in force. A retired setting names what replaced it (:data:`RETIRED_ENV_NAMES`)."""
    known = [ENV_PREFIX + n.upper() for n in Settings.model_fields]
    out = []
    for name in sorted(environ):
        up = name.upper()
        if not up.startswith(ENV_PREFIX) or up in known or up in OTHER_ENV_NAMES:
            continue
        if up in RETIRED_ENV_NAMES:
            out.append((name, RETIRED_ENV_NAMES[up]))
            continue
        # compared without the shared prefix, which would make any two names look alike
        close = difflib.get_close_matches(up[len(ENV_PREFIX):],
                                          [k[len(ENV_PREFIX):] for k in known], n=1, cutoff=0.6)
        out.append((name, ENV_PREFIX + close[0] if close else None))
    return out


def _is_list(name: str) -> bool:
    return typing.get_origin(Settings.model_fields[name].annotation) in (tuple, list)


def _error_lines(err: ValidationError, label, raw: Mapping[str, str] | None = None) -> list[str]:
    lines, seen = [], set()
    for e in err.errors():
        loc = e.get("loc") or ()
        name = loc[0] if loc and loc[0] in Settings.model_fields else None
        if name is None:  # a check across settings (model validator): its own message
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            lines.append(msg)
            continue
        if name in seen:  # a union type reports each alternative: one line per variable
            continue
        seen.add(name)
        value = raw[name] if raw is not None and name in raw else e.get("input")
        lines.append(_problem_line(label(name), name, value))
    return lines


def _problem_line(label: str, name: str, value) -> str:
    shown = "(hidden)" if name in _SECRET_FIELDS else repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{label}={shown}: expected {expected(name)}"


_SECRET_FIELDS = frozenset({"sasl_password", "serve_token"})


def expected(name: str) -> str:
    """What a setting accepts, in words: ``an integer >= 1``, ``one of text, json``, ..."""
    field = Settings.model_fields[name]
    ann = field.annotation
    optional = False
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) < len(typing.get_args(ann))
        ann = args[0] if len(args) == 1 else ann
    if typing.get_origin(ann) is Literal:
        what = "one of " + ", ".join(str(a) for a in typing.get_args(ann))
    elif typing.get_origin(ann) in (tuple, list):
        what = "a JSON list of integers, e.g. [10, 20]"
    else:
        what = {int: "an integer", float: "a number", bool: "true or false"}.get(ann, "text")
    bounds = []
    for m in field.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                bounds.append(f"{op} {v:,}" if isinstance(v, int) else f"{op} {v}")
    if bounds:
        what += " " + " and ".join(bounds)
    return what + (" (or unset)" if optional and what != "text" else "")
