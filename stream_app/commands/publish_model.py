"""``seqstream publish-model CHECKPOINT``: hand a new checkpoint to the running workers.

Two ways, as :mod:`stream_app.worker.model_swap` reads them:

- ``--watch-dir DIR`` (default: ``SEQSTREAM_MODEL_WATCH_DIR``): the checkpoint is copied into
  ``DIR/<model_version>/`` and ``DIR/LATEST`` is replaced atomically to name it; workers
  started with the same ``SEQSTREAM_MODEL_WATCH_DIR`` pick it up within
  ``SEQSTREAM_MODEL_POLL_S``. DIR must be a directory the workers see (shared storage).
- ``--control``: a load_model record signed with ``SEQSTREAM_CONTROL_KEY_FILE`` goes to the
  control topic; workers with the same key load the path only when it lies inside their
  ``SEQSTREAM_MODEL_ROOT``. The record carries the path, not the files, so the checkpoint
  must already be where the workers can read it under that path. Both settings are checked
  here first, and the path against the root, so a record the workers would refuse is never
  sent.

Either way the checkpoint's ``meta.json`` is read first (a directory that is no checkpoint
is refused in one line); each worker then loads and verifies the model itself and keeps its
current one if that fails (logged, and a critical ``model_swap`` alert).
"""

from __future__ import annotations

import os

from schemas.exceptions import SeqstreamError
from stream_app.commands._common import add_kafka_options, check_kafka, settings_from_args


def register(sub) -> None:
    p = sub.add_parser("publish-model",
                       help="publish a checkpoint to the running workers (hot model swap)")
    p.add_argument("checkpoint", help="checkpoint directory (from seqstream train)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--watch-dir", default=None, metavar="DIR",
                     help="copy it into the directory the workers watch (default "
                          "SEQSTREAM_MODEL_WATCH_DIR)")
    how.add_argument("--control", action="store_true",
                     help="send a signed load_model record on the control topic (needs "
                          "SEQSTREAM_CONTROL_KEY_FILE and a checkpoint inside "
                          "SEQSTREAM_MODEL_ROOT)")
    add_kafka_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from model_core.checkpoint import read_meta
    from model_core.exceptions import CheckpointError

    if not os.path.isdir(args.checkpoint):
        raise SeqstreamError(f"{args.checkpoint}: no such checkpoint directory")
    try:
        meta = read_meta(args.checkpoint)
    except (CheckpointError, OSError, ValueError) as e:
        raise SeqstreamError(f"{args.checkpoint} is not a checkpoint directory ({e})") from None
    version = meta.get("model_version") or "?"
    settings = settings_from_args(args)
    if args.control:
        return _by_control(args, settings, version)
    watch_dir = args.watch_dir or settings.model_watch_dir
    if not watch_dir:
        raise SeqstreamError("say where the workers look: --watch-dir DIR (or "
                             "SEQSTREAM_MODEL_WATCH_DIR), or --control for the control topic")
    from stream_app.worker.model_swap import publish_checkpoint

    dst = publish_checkpoint(args.checkpoint, watch_dir)
    print(f"published model {version} as {dst} ({os.path.join(watch_dir, 'LATEST')} names it); "
          f"workers watching {watch_dir} load it within SEQSTREAM_MODEL_POLL_S "
          f"({settings.model_poll_s:g} s)")
    return 0


def _by_control(args, settings, version: str) -> int:
    from stream_app.worker.model_swap import control_key, inside_root, send_load_model

    if not settings.control_key_file:
        raise SeqstreamError("--control signs its record: set SEQSTREAM_CONTROL_KEY_FILE to the "
                             "key file the workers use")
    control_key(settings)  # unreadable or too short: one line, before any connection
    if not settings.model_root:
        raise SeqstreamError("--control needs SEQSTREAM_MODEL_ROOT, the directory the workers "
                             "load control-topic checkpoints from")
    path = os.path.abspath(args.checkpoint)
    if not inside_root(path, settings.model_root):
        raise SeqstreamError(f"{path} is not inside SEQSTREAM_MODEL_ROOT ({settings.model_root}):"
                             " workers would refuse it; copy it there first")
    check_kafka(settings)
    send_load_model(settings, path)
    print(f"sent a signed load_model record for model {version} ({path}) to "
          f"{settings.topic('control')}; workers with the same key and model root load it, "
          "verify it and log 'seqstream model swapped'")
    return 0
