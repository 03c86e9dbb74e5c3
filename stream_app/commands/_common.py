"""Options shared by several sub-commands, and the checks a command makes before it starts
work: settings (every bad ``SEQSTREAM_*`` variable named, unknown ones warned about), the
Kafka security settings, the broker's reachability and free ports, each failing in one line
within seconds instead of a traceback after the clients' own retry loops."""

from __future__ import annotations

import argparse
import os
import sys

from schemas.exceptions import SeqstreamError
from stream_app.kafka.security import kafka_python_kwargs
from stream_app.settings import RETIRED_ENV_NAMES, Settings, load_settings, unknown_env_names


def add_kafka_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka (defaults from SEQSTREAM_* environment variables)")
    g.add_argument("--broker-url", help="kafka://host:port")
    g.add_argument("--topic-prefix")
    g.add_argument("--app-id")
    g.add_argument("--partitions", type=int)


def add_stream_options(p: argparse.ArgumentParser) -> None:
    add_kafka_options(p)
    g = p.add_argument_group("stream")
    g.add_argument("--model", dest="model_path", help="checkpoint directory")
    g.add_argument("--device", help="auto | cpu | cuda")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--batch-wait-ms", type=int)
    g.add_argument("--top-k", type=int)
    g.add_argument("--window-s", type=int)
    g.add_argument("--max-seq-len", type=int)
    g.add_argument("--data-dir")
    g.add_argument("--store", help="memory:// or rocksdb://")


_SETTING_ARGS = ("broker_url", "topic_prefix", "app_id", "partitions", "model_path", "device",
                 "batch_size", "batch_wait_ms", "top_k", "window_s", "max_seq_len", "data_dir",
                 "store", "log_level", "log_format")


def add_log_options(p: argparse.ArgumentParser) -> None:
    """``--log-level`` / ``--log-format`` (settings ``log_level`` / ``log_format``)."""
    from stream_app.observe.logs import FORMATS, LEVELS

    g = p.add_argument_group("logging")
    g.add_argument("--log-level", type=str.upper, choices=LEVELS, default=None,
                   help="default SEQSTREAM_LOG_LEVEL, else INFO")
    g.add_argument("--log-format", choices=FORMATS, default=None,
                   help="text (timestamped lines) or json (one object per line); default "
                        "SEQSTREAM_LOG_FORMAT, else text")


def settings_from_args(args: argparse.Namespace, **extra) -> Settings:
    """Environment first, then any CLI option given, then ``extra``.

    A ``SEQSTREAM_*`` variable that is no setting is ignored by the settings, so a typo would
    leave the default in force without a word: each gets one warning line on stderr with the
    closest real name. Bad values raise :class:`~stream_app.settings.SettingsError`."""
    command = getattr(args, "command", None) or "seqstream"
    for name, close in unknown_env_names(os.environ):
        if name.upper() in RETIRED_ENV_NAMES:
            print(f"seqstream {command}: warning: {name} is retired (ignored): set {close} "
                  "instead", file=sys.stderr)
            continue
        hint = f"; did you mean {close}?" if close else ""
        print(f"seqstream {command}: warning: {name} is not a seqstream setting (ignored)"
              f"{hint}", file=sys.stderr)
    values = {k: getattr(args, k, None) for k in _SETTING_ARGS}
    values.update(extra)
    return load_settings(**values)


# --------------------------------------------------------------------------- before the work
class KafkaUnreachable(SeqstreamError):
    """The broker named by the settings does not answer (or not as Kafka)."""


class PortTaken(SeqstreamError):
    """A port a command must listen on is in use."""


#: How long the reachability check may take in all (the issue's bound is 10 s).
BROKER_CHECK_S = 6.0


def kafka_settings(args: argparse.Namespace, **extra) -> Settings:
    """:func:`settings_from_args`, then :func:`check_kafka`: for every command that talks to
    Kafka, so a wrong broker or bad credentials end in one line before any work."""
    settings = settings_from_args(args, **extra)
    check_kafka(settings)
    return settings


def check_kafka(settings: Settings, timeout_s: float = BROKER_CHECK_S) -> None:
    """Fail fast and in one line when Kafka cannot be used with these settings.

    1. The security settings are resolved (files read, SASL/TLS consistency): a
       :class:`~stream_app.kafka.security.SecurityConfigError` at once, before any connection.
    2. A TCP connection to each bootstrap address (at most 2 s each): refused, unknown host
       or no answer is named per address — the Kafka clients would retry for 30 s or more
       and end in a traceback.
    3. One Kafka handshake (kafka-python, API version probe) with the real security settings,
       bounded by what is left of ``timeout_s``: a port that is not Kafka, or TLS/SASL that
       the broker does not speak, fails here.
    """
    import socket
    import time

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, NoBrokersAvailable

    security = kafka_python_kwargs(settings)  # SecurityConfigError: one line, no network
    deadline = time.monotonic() + timeout_s
    url = settings.broker_url
    reachable, reasons = [], []
    for server in settings.bootstrap_servers:
        host, sep, port = server.rpartition(":")
        if not sep or not port.isdigit():
            raise KafkaUnreachable(f"broker address {server!r} in {url} has no port "
                                   "(kafka://host:port)")
        try:
            socket.create_connection((host.strip("[]"), int(port)),
                                     timeout=max(0.1, min(2.0, deadline - time.monotonic()))
                                     ).close()
            reachable.append(server)
        except socket.gaierror:
            reasons.append(f"{server}: unknown host")
        except TimeoutError:
            reasons.append(f"{server}: no answer within 2 s")
        except OSError as e:
            reasons.append(f"{server}: {(e.strerror or str(e)).lower()}")
    hint = "start one (seqstream broker) or point SEQSTREAM_BROKER_URL / --broker-url at it"
    if not reachable:
        raise KafkaUnreachable(f"no Kafka broker at {url} ({'; '.join(reasons)}): {hint}")
    left_ms = int(max(1.0, deadline - time.monotonic()) * 1000)
    try:
        KafkaAdminClient(bootstrap_servers=reachable, client_id=f"{settings.app_id}-check",
                         api_version_auto_timeout_ms=left_ms, request_timeout_ms=left_ms + 1000,
                         **security).close()
    except NoBrokersAvailable:
        raise KafkaUnreachable(
            f"{url} accepts connections but did not answer as a Kafka broker within "
            f"{timeout_s:.0f} s (wrong port, or SEQSTREAM_SECURITY_PROTOCOL="
            f"{settings.security_protocol} not what the broker speaks?)") from None
    except KafkaError as e:  # e.g. authentication refused
        raise KafkaUnreachable(f"Kafka broker at {url}: {type(e).__name__}: {e}") from None


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise :class:`PortTaken` naming the port when ``host:port`` cannot be listened on
    (port 0, "any free port", always can)."""
    from stream_app.kafka.broker import port_taken

    taken = port_taken(host, port) if port else None
    if taken:
        raise PortTaken(f"port {port} on {host} is {taken} ({what}): stop what holds it or "
                        "choose another port")


# --------------------------------------------------------------------------- checked numbers
def _number(kind, lo: float | None, lo_open: bool, hi: float | None = None,
            hi_open: bool = False, what: str = ""):
    """An argparse ``type`` that rejects values out of range with one line at parse time."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if v != v or (lo is not None and (v <= lo if lo_open else v < lo)) or (
                hi is not None and (v >= hi if hi_open else v > hi)):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return v

    parse.__name__ = what  # argparse names the type in its messages
    return parse


#: ``type=`` values for numeric options: argparse then rejects bad values with one line.
positive_int = _number(int, 0, True, what="a positive integer")
non_negative_int = _number(int, 0, False, what="an integer >= 0")
positive_float = _number(float, 0.0, True, what="a positive number")
non_negative_float = _number(float, 0.0, False, what="a number >= 0")
fraction = _number(float, 0.0, False, 1.0, what="a number in 0..1")
open_fraction = _number(float, 0.0, True, 1.0, True, what="a number strictly between 0 and 1")
port_number = _number(int, 0, False, 65535, what="a port number 0..65535")


# --------------------------------------------------------------------------- log readers
def add_reader_options(p: argparse.ArgumentParser) -> None:
    """The options that say how to read a log: the same for train, evaluate, compare, replay
    and inspect (``seqstream inspect FILE --json`` prints them for a given file)."""
    g = p.add_argument_group("reading the log (seqstream inspect FILE prints these for a file)")
    g.add_argument("--format", "-f", dest="fmt", default=None,
                   help="taobao | yoochoose | jsonl | csv | seqtxt | recbole (guessed from the "
                        "file name if omitted)")
    g.add_argument("--columns", default=None, metavar="JSON",
                   help='field -> column (csv) or path (jsonl) as JSON, e.g. \'{"user_id":'
                        '"uid","item_id":"sku"}\'; nested jsonl: \'{"item_id":"events[].item"}\'')
    g.add_argument("--actions", default=None, metavar="JSON",
                   help='action values -> canonical action or null to drop, e.g. '
                        '\'{"remove_from_cart": null, "1": "view", "4": "purchase"}\'')
    g.add_argument("--time-unit", default=None, choices=("auto", "s", "ms", "us", "ns"),
                   help="unit of numeric times (csv/jsonl; default auto: by size)")
    g.add_argument("--time-format", default=None, metavar="STRPTIME",
                   help="date-time pattern, e.g. '%%Y-%%m-%%d %%H:%%M:%%S %%Z' (default: ISO 8601 "
                        "and '... UTC')")
    g.add_argument("--timezone", default=None, metavar="TZ",
                   help="zone of date-times without an offset (IANA name; default UTC)")
    g.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="other reader option (repeatable), e.g. --opt delimiter=tab "
                        "--opt header=false --opt default_action=click")


def _opt_value(v: str):
    low = v.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def _json_option(name: str, text: str | None):
    import json

    from model_core.exceptions import DataFormatError

    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{name} is not valid JSON: {e}") from None


def given_reader_options(args: argparse.Namespace) -> dict:
    """The reader keyword options the user gave (``--opt``, ``--columns``, ``--actions`` and
    the time flags), parsed; ``--format`` is not among them."""
    from model_core.exceptions import DataFormatError

    kw: dict = {}
    for o in args.opt:
        k, sep, v = o.partition("=")
        if not sep or not k.strip():
            raise DataFormatError(f"--opt takes KEY=VALUE, got {o!r}")
        # the value is kept as given: a delimiter may be a tab or a space
        kw[k.strip()] = v if k.strip() == "delimiter" else _opt_value(v.strip())
    for key, name in (("columns", "--columns"), ("actions", "--actions")):
        value = _json_option(name, getattr(args, key, None))
        if value is not None:
            kw[key] = value
    for key in ("time_unit", "time_format", "timezone"):
        if getattr(args, key, None) is not None:
            kw[key] = getattr(args, key)
    return kw


def guessed_reading(args: argparse.Namespace, path: str, given: dict | None = None):
    """``seqstream inspect``'s guess for ``path`` (a ``Reading``) with every reader option the
    user gave (``given``: :func:`given_reader_options`, parsed here when None) put over it."""
    from model_core.datasets.sniff import guess_reading

    given = given_reader_options(args) if given is None else given
    reading = guess_reading(path, actions=given.get("actions"))
    if given:
        reading.opts.update(given)
        reading.notes.append("options given here override the guess")
    return reading


_ANNOUNCED: set[str] = set()


def reader_options(args: argparse.Namespace, path: str) -> tuple[str, dict]:
    """``(format, reader keyword options)`` from the options of :func:`add_reader_options`.

    Without ``--format``, a file whose name says no more than CSV or JSON lines (or nothing:
    Beauty's ``.txt``) is read the way ``seqstream inspect`` guesses it (format, delimiter,
    header, which column is which, time unit), the options given put over the guess
    (:func:`model_core.datasets.reading_for`, the rule ``demo --data`` and ``learner
    --warm`` read by too); one stderr line shows what was guessed as flags (none for a file of Event records, which
    needs no option). Before, ``train``/``compare`` read such a file only when its columns
    were named like the Event fields, while ``inspect`` had already worked out the mapping."""
    import sys

    from model_core.datasets import reading_for
    from model_core.terminal import wrapped

    fmt, opts, how = reading_for(path, args.fmt, given_reader_options(args))
    if how and path not in _ANNOUNCED:
        _ANNOUNCED.add(path)  # once per file and process (a command may read it twice)
        print(wrapped(f"read as `seqstream inspect` guesses: {how}", f"{path}: "),
              file=sys.stderr)
    return fmt, opts


def read_events(args: argparse.Namespace, path: str):
    """The events of :func:`read_checked`."""
    return read_checked(args, path).events


def read_checked(args: argparse.Namespace, path: str, options: tuple[str, dict] | None = None):
    """Read a whole log with the reader options in ``args`` (or ``options``, the ``(format,
    keyword options)`` :func:`reader_options` already gave) (a ``LogReadResult``), after one
    stderr line on rejected and dropped rows (with the first reasons) and any data warning;
    raises :class:`~model_core.exceptions.DataFormatError` when no line is a valid event."""
    import sys

    from model_core.datasets import read_log
    from model_core.exceptions import DataFormatError

    fmt, kw = reader_options(args, path) if options is None else options
    res = read_log(path, fmt, **kw)
    for w in res.warnings:
        print(f"warning: {path}: {w}", file=sys.stderr)
    if res.rejected or res.dropped:
        dropped = f", {res.dropped} dropped by --actions" if res.dropped else ""
        print(f"{path}: {len(res.events)} events, {res.rejected} rejected line(s){dropped}",
              file=sys.stderr)
        for r in res.errors[:3]:
            print(f"  line {r.line_no}: {r.reason}", file=sys.stderr)
    if not res.events:
        first = f"; first: line {res.errors[0].line_no}: {res.errors[0].reason}" \
            if res.errors else ""
        raise DataFormatError(f"{path}: no valid events as format {fmt!r}{first}")
    return res


# --------------------------------------------------------------------------- protocols
def default_protocol(*specs: str) -> str:
    """The protocol an evaluation uses when none is given: the one the checkpoint(s) were
    trained with (when they agree), else ``temporal``, ``train``'s default."""
    from model_core.split_guard import recorded_protocol

    found = {recorded_protocol(s) for s in specs} - {None}
    return found.pop() if len(found) == 1 else "temporal"


def check_checkpoint_split(model, protocol: str, info: dict, args: argparse.Namespace) -> None:
    """Refuse (or with ``--allow-overlap`` warn loudly) when ``model``'s recorded training
    split overlaps the test part of the split about to be evaluated on ``args.data``."""
    import sys

    from model_core.exceptions import ModelCoreError
    from model_core.split_guard import training_overlap
    from model_core.train import data_hash

    meta = getattr(model, "meta", None) or {}
    if not (meta.get("split") or {}).get("protocol"):
        return
    reason = training_overlap(meta, protocol, info, data_hash([args.data]),
                              getattr(args, "test", None))
    if reason is None:
        return
    if getattr(args, "allow_overlap", False):
        print(f"WARNING: test part overlaps training data: {reason}. The figures below do not "
              "measure generalisation.", file=sys.stderr)
        return
    raise ModelCoreError(f"{reason} (--allow-overlap evaluates anyway)")


# --------------------------------------------------------------------------- output
def figure(v) -> str:
    """A value as a person reads it: floats rounded (1,408 / 3.14 / 0.0123), ints with
    thousands separators, anything else as ``str``. For printed tables, not for JSON."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        a = abs(v)
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}" if a >= 1e-4 or a == 0 else f"{v:.2e}"
    return str(v)


# --------------------------------------------------------------------------- hyper-parameters
def _hparam_type(h):
    """The argparse ``type`` of a declared hyper-parameter (numbers range-checked at parse
    time, in one line)."""
    if h.kind in (int, float):
        return _number(h.kind, h.low, h.low_open, h.high, False, what=h.describe_range())
    return str


def add_hparam_options(p: argparse.ArgumentParser, title: str = "model hyper-parameters") -> None:
    """One flag per hyper-parameter name declared by any model (:mod:`model_core.hparams`):
    ``--dropout``, ``--k``, ``--lambda-spw``, ... A flag left out is absent from the parsed
    arguments (``argparse.SUPPRESS``), so :func:`given_hparams` knows what a user set and the
    data-shape defaults (:mod:`model_core.defaults`) fill the rest. Boolean ones come as
    ``--name`` / ``--no-name``."""
    from model_core.hparams import all_hparams

    g = p.add_argument_group(f"{title} (unset: chosen from the data, printed at the start)")
    for name, decls in all_hparams().items():
        h = decls[0][1]
        models = [m for m, _ in decls]
        defaults = {repr(d.default) for _, d in decls if d.default not in (None, [])}
        where = ", ".join(models)
        if len(defaults) > 1:
            dflt = "; default " + ", ".join(f"{m} {d.default}" for m, d in decls)
        elif defaults and h.kind is not bool:
            dflt = f"; default {decls[0][1].default}"
        else:
            dflt = ""
        help_text = f"{h.help} [{where}{dflt}]".replace("%", "%%")
        kw: dict = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if h.kind is bool:
            g.add_argument(h.cli_flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            if h.choices and h.kind is not list:
                kw["choices"] = h.choices
            kw["metavar"] = "A,B" if h.kind is list else None
            if kw["metavar"] is None:
                del kw["metavar"]
            g.add_argument(h.cli_flag, type=_hparam_type(h), **kw)
    # the older spelling of --no-sparse-emb
    g.add_argument("--dense-emb", dest="sparse_emb", action="store_false",
                   default=argparse.SUPPRESS,
                   help="= --no-sparse-emb: dense item-embedding gradients on any catalogue")


def given_hparams(args: argparse.Namespace, model: str, config: dict | None = None,
                  others: tuple[str, ...] = ()) -> dict:
    """The hyper-parameters a user gave for ``model``: the flags of
    :func:`add_hparam_options` over the ``config`` dict (e.g. ``evaluate --config JSON``),
    checked against the model's declarations (a bad value: one-line ModelCoreError). A flag
    that neither ``model`` nor any of ``others`` (the other models of the same command)
    declares gets one warning line on stderr and is left out."""
    from model_core.exceptions import ModelCoreError
    from model_core.hparams import all_hparams

    decls = all_hparams()
    mine = all_hparams([model])
    anyone = all_hparams([model, *others])
    out: dict = dict(config or {})  # keys other than hyper-parameters: run options
    for name in decls:
        if not hasattr(args, name):
            continue
        if name not in anyone:
            print(f"warning: {decls[name][0][1].cli_flag} does not apply to "
                  f"{' or '.join([model, *others])} (ignored)", file=sys.stderr)
        if name in mine:
            out[name] = getattr(args, name)
    for name, value in list(out.items()):
        if name in mine:
            try:
                out[name] = mine[name][0][1].check(value)
            except ValueError as e:
                raise ModelCoreError(str(e)) from None
    return out


def add_training_data_options(p: argparse.ArgumentParser, out_help: str) -> None:
    """What ``train`` and ``tune`` read and how they split it: ``--data`` with the reader
    options, ``--model``, ``--out``, ``--protocol``, ``--test``, ``--valid-users``,
    ``--split-seed``, and the run options ``--seed``, ``--device``, ``--threads``."""
    p.add_argument("--data", required=True, help="behaviour log file")
    add_reader_options(p)
    p.add_argument("--model", required=True, help="popular | markov | itemknn | sknn | vsknn "
                                                  "| stan | vstan | gru4rec | sasrec")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--protocol", default="temporal", choices=("loo", "temporal", "session"),
                   help="split (default temporal, as evaluate); recorded in the checkpoint")
    p.add_argument("--test", default=None, help="session protocol: test sessions file")
    p.add_argument("--valid-users", type=positive_int, default=None, metavar="N",
                   help="loo: only N random users hold out their second-last item for "
                        "validation; every other user also trains on it (never on the test item)")
    p.add_argument("--split-seed", type=int, default=0, help="loo --valid-users: which users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")


def read_training_split(args: argparse.Namespace, keep_unknown_targets: bool = False):
    """Read ``--data`` (and ``--test``) and split them as the options of
    :func:`add_training_data_options` say. Returns ``(log, split, data_record)``, the last
    being what a checkpoint's ``meta.json`` records under ``data``. Bad options and data fail
    in one line (DataFormatError)."""
    from model_core.exceptions import DataFormatError
    from model_core.models import MODELS
    from model_core.splits import make_split
    from model_core.train import data_hash

    if args.model not in MODELS:
        raise DataFormatError(f"unknown model {args.model!r}; choose one of {', '.join(MODELS)}")
    if args.valid_users is not None and args.protocol != "loo":
        raise DataFormatError("--valid-users applies to --protocol loo only")
    fmt, reader_opts = reader_options(args, args.data)
    log = read_checked(args, args.data, (fmt, reader_opts))
    test_events = read_events(args, args.test) if args.test else None
    vu = args.valid_users if args.valid_users is not None else \
        loo_valid_users(args.protocol, log.events)
    split = make_split(log.events, args.protocol, test_events=test_events, valid_users=vu,
                       keep_unknown_targets=keep_unknown_targets, seed=args.split_seed)
    record = {"path": str(args.data), "format": fmt, "sha256_16": data_hash([args.data]),
              "events": len(log.events), "rejected_lines": log.rejected,
              "dropped_lines": log.dropped, "reader_options": reader_opts,
              "test_file": args.test}
    return log, split, record


def ignored_with_checkpoint(args: argparse.Namespace, spec: str) -> str | None:
    """The one warning line for options that train a model, given while ``spec`` names a
    checkpoint directory (which runs with the values it was trained with, recorded in its
    ``meta.json``); None when none was given."""
    from model_core.hparams import all_hparams

    given = [h[0][1].cli_flag for name, h in all_hparams().items() if hasattr(args, name)]
    given += [f for f, k in (("--config", "config"), ("--max-seconds", "max_seconds"),
                             ("--max-minutes", "max_minutes")) if getattr(args, k, None)]
    if not given:
        return None
    return f"warning: {', '.join(given)} ignored: checkpoint {spec} runs as trained"


def time_budget_s(args: argparse.Namespace) -> float | None:
    """``--max-seconds`` or ``--max-minutes`` (the smaller when both are given) in seconds."""
    found = [v for v in (getattr(args, "max_seconds", None),
                         (args.max_minutes * 60.0) if getattr(args, "max_minutes", None)
                         else None) if v]
    return min(found) if found else None


def loo_valid_users(protocol: str, events) -> int | None:
    """The ``--valid-users`` a loo split gets when none is given
    (:func:`model_core.defaults.default_valid_users`), said on stderr when it is not None."""
    from model_core.defaults import default_valid_users

    if protocol != "loo":
        return None
    n_users = len({e.user_id for e in events})
    vu = default_valid_users(protocol, n_users)
    if vu is not None:
        print(f"defaults: loo over {n_users:,} users → {vu:,} of them validate, the others "
              f"also train on their second-last item (--valid-users sets another)",
              file=sys.stderr)
    return vu


def hparams_record(choice, history: list[dict], model_config: dict | None = None) -> dict:
    """What a checkpoint's ``meta.json`` records of the hyper-parameters: every declared
    value that ran (the training config of the last run, where the trainer resolved an
    automatic one, e.g. ``loss`` "auto"), where each came from (flag, recipe or default),
    the recipe and the reasons printed. ``model_config``: the trained model's config, where
    the automatic values were resolved (``loss`` "auto" -> "ce", ``hidden`` None -> dim)."""
    if choice is None:
        return {}
    ran = {**((history[-1].get("config") or {}) if history else {}), **(model_config or {})}
    values = {k: ran.get(k, v) for k, v in choice.values.items()}
    return {"values": values, "sources": dict(choice.sources), "recipe": choice.recipe,
            "reasons": list(choice.reasons)}
