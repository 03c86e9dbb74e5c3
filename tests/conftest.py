"""Shared fixtures: the real embedded broker, unique topic namespaces, tiny models."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def broker():
    """One embedded Tansu broker for the whole test session (memory storage, loopback)."""
    from stream_app.kafka.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b


_counter = itertools.count()


@pytest.fixture
def stream_settings(broker, tmp_path):
    """Settings with a fresh topic prefix and app id, pointing at the session broker."""
    from stream_app.settings import load_settings

    tag = f"t{next(_counter)}{uuid.uuid4().hex[:6]}"
    return load_settings(
        broker_url=broker.url, topic_prefix=f"{tag}.", app_id=tag, web_port=0,
        data_dir=str(tmp_path / "worker-data"), idle_close_s=1.0, session_timeout_s=6.0,
        heartbeat_interval_s=0.5,
    )


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (data sets live in ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def markov_checkpoint():
    """``save(events, path) -> model``: a Markov model fitted on ``events``, saved at ``path``
    (a stateless function: session scope lets module-scoped fixtures use it)."""
    from model_core.checkpoint import save_model
    from model_core.models import create_model
    from model_core.sequences import build_vocab, group_by_user

    def save(events, path):
        vocab = build_vocab(events)
        model = create_model("markov", vocab)
        model.fit(group_by_user(events, vocab))
        save_model(model, path)
        return model

    return save


@pytest.fixture
def clean_env(monkeypatch):
    """No ``SEQSTREAM_*`` variable from the caller's shell: settings at their defaults."""
    import os

    for name in list(os.environ):
        if name.startswith("SEQSTREAM_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def markov_dir(tmp_path, markov_checkpoint):
    """A small Markov checkpoint saved at ``tmp_path/models/v2`` (for worker and swap tests)."""
    from model_core.datasets.synth import generate

    markov_checkpoint(generate(400, seed=6), tmp_path / "models" / "v2")
    return tmp_path / "models" / "v2"
