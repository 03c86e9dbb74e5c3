"""Session-kNN models (SKNN, V-SKNN, STAN, VSTAN) against scores computed by hand.

The training sessions of every example (items are vocabulary indices 1..6, one day apart):

    S0 = [1, 2, 3]      day 0      distinct {1, 2, 3}, last positions 1:1 2:2 3:3
    S1 = [2, 4]         day 1      distinct {2, 4},    last positions 2:1 4:2
    S2 = [1, 5, 2, 5]   day 2      distinct {1, 2, 5}, last positions 1:1 5:4 2:3
    S3 = [6]            day 3

Clicks per item (for idf = ln(4 sessions / clicks)): 1:2  2:3  3:1  4:1  5:2  6:1.
An item no neighbour scores gets popularity / (max popularity + 1) - 1; item 6 (1 click,
the most popular item 2 has 3): 1/4 - 1 = -0.75.
"""

from __future__ import annotations

import json
from math import exp, log, sqrt

import numpy as np
import pytest

from model_core.checkpoint import load_model, save_model
from model_core.exceptions import CheckpointError
from model_core.models import MODELS, create_model
from model_core.models.data import SeqData
from model_core.predictor import SequenceBatch
from model_core.verify import verify_model
from model_core.vocab import ItemVocab

DAY_MS = 86_400_000
SESSIONS = ([1, 2, 3], [2, 4], [1, 5, 2, 5], [6])
KNN = ("sknn", "vsknn", "stan", "vstan")
UNSCORED_6 = 1 / 4 - 1


def _data(with_time: bool = True) -> SeqData:
    return SeqData(items=[np.array(s, np.int32) for s in SESSIONS],
                   timestamps_ms=[np.full(len(s), d * DAY_MS, np.int64)
                                  for d, s in enumerate(SESSIONS)] if with_time else None)


def _vocab() -> ItemVocab:
    return ItemVocab([f"i{n}" for n in range(1, 7)])


def _scores(name: str, history, data: SeqData | None = None, **config) -> np.ndarray:
    m = create_model(name, _vocab(), **config).fit(data or _data())
    return m.score(SequenceBatch(items=[np.array(history, np.int32)]))[0]


def test_registry_has_the_knn_family():
    assert set(KNN) <= set(MODELS)


def test_sknn_cosine_of_binary_sessions():
    # current [1, 2]: 2 distinct items; candidates = sessions with item 1 or 2: S0, S1, S2
    # cos(S0) = |{1,2}| / sqrt(2 * 3) = 2/sqrt(6); cos(S1) = 1 / sqrt(2 * 2) = 0.5;
    # cos(S2) = 2/sqrt(6). Item score = sum of the similarities of the neighbours holding it.
    c = 2 / sqrt(6)
    expected = [2 * c, 2 * c + 0.5, c, 0.5, c, UNSCORED_6]
    np.testing.assert_allclose(_scores("sknn", [1, 2])[1:], expected, rtol=1e-5)


def test_sknn_samples_the_most_recent_candidates_and_keeps_k():
    # sample_size 2: of S0 (day 0), S1 (day 1), S2 (day 2) only S1 and S2 are candidates.
    # scores: 1 <- S2 (2/sqrt 6); 2 <- S1 + S2; 4 <- S1 (0.5); 5 <- S2; 3 unscored.
    c = 2 / sqrt(6)
    s = _scores("sknn", [1, 2], sample_size=2)
    np.testing.assert_allclose(s[[1, 2, 4, 5]], [c, c + 0.5, 0.5, c], rtol=1e-5)
    np.testing.assert_allclose(s[[3, 6]], [UNSCORED_6, UNSCORED_6])  # 1 click each
    # k 1: S0 and S2 tie at 2/sqrt(6); the more recent, S2, is the neighbour
    s = _scores("sknn", [1, 2], k=1)
    np.testing.assert_allclose(s[[1, 2, 5]], [c, c, c], rtol=1e-5)
    assert (s[[3, 4, 6]] < 0).all()


def test_vsknn_linear_positions_and_div_score():
    # current [4, 1], L = 2: linear weights w(4) = 1 - 0.1 * (2 - 1) = 0.9, w(1) = 1.
    # similarity = shared weights / 2 distinct items: S0 {1}: 0.5; S1 {4}: 0.45; S2 {1}: 0.5.
    # div score: S0 and S2 share the last item (step 1, x1); S1 only item 4 (step 2, x1/2).
    # 1: 0.5 + 0.5 = 1; 2: 0.5 + 0.225 + 0.5 = 1.225; 3: 0.5; 4: 0.225; 5: 0.5.
    np.testing.assert_allclose(_scores("vsknn", [4, 1])[1:],
                               [1.0, 1.225, 0.5, 0.225, 0.5, UNSCORED_6], rtol=1e-5)


def test_vsknn_idf_weighting():
    # the same, each item times (1 + 1 * idf): idf 1 = ln 2, 2 = ln(4/3), 3 = 4 = ln 4, 5 = ln 2
    expected = [1.0 * (1 + log(2)), 1.225 * (1 + log(4 / 3)), 0.5 * (1 + log(4)),
                0.225 * (1 + log(4)), 0.5 * (1 + log(2)), UNSCORED_6]
    np.testing.assert_allclose(_scores("vsknn", [4, 1], idf_weighting=1.0)[1:], expected,
                               rtol=1e-5)


def _stan_parts():
    """STAN with every lambda 1 (lambda_snh: 1 day), current [4, 1], L = 2."""
    w4, w1 = exp(-1), 1.0  # exp((p - L) / 1) at p = 1, 2
    norm = sqrt(w4 ** 2 + w1 ** 2)
    # cosine with weights, times exp(-age in days) relative to the newest candidate (S2)
    s0 = w1 / (norm * sqrt(3)) * exp(-2)
    s1 = w4 / (norm * sqrt(2)) * exp(-1)
    s2 = w1 / (norm * sqrt(3)) * exp(0)
    return s0, s1, s2


def test_stan_three_decays():
    s0, s1, s2 = _stan_parts()
    # item weight exp(-|l - l*|): l* = the neighbour's last position holding 4 or 1
    # S0 [1,2,3]: l* = 1 (item 1) -> 1: e^0, 2: e^-1, 3: e^-2
    # S1 [2,4]:   l* = 2 (item 4) -> 2: e^-1, 4: e^0
    # S2 [1,5,2,5]: l* = 1 (item 1); last positions 5: 4, 2: 3 -> 1: e^0, 5: e^-3, 2: e^-2
    expected = [s0 + s2, s0 * exp(-1) + s1 * exp(-1) + s2 * exp(-2), s0 * exp(-2), s1,
                s2 * exp(-3), UNSCORED_6]
    got = _scores("stan", [4, 1], lambda_spw=1, lambda_snh=1, lambda_inh=1)
    np.testing.assert_allclose(got[1:], expected, rtol=1e-5)


def test_vstan_adds_position_of_the_shared_item_and_idf():
    s0, s1, s2 = _stan_parts()
    # lambda_ipw 1: S0 and S2 share item 1 (current position 2: e^0), S1 item 4 (e^-1)
    # lambda_idf 1: each item times (1 + idf)
    i1, i2, i34, i5 = 1 + log(2), 1 + log(4 / 3), 1 + log(4), 1 + log(2)
    expected = [(s0 + s2) * i1,
                (s0 * exp(-1) + s1 * exp(-1) * exp(-1) + s2 * exp(-2)) * i2,
                s0 * exp(-2) * i34, s1 * exp(-1) * i34, s2 * exp(-3) * i5, UNSCORED_6]
    got = _scores("vstan", [4, 1], lambda_spw=1, lambda_snh=1, lambda_inh=1, lambda_ipw=1,
                  lambda_idf=1)
    np.testing.assert_allclose(got[1:], expected, rtol=1e-5)


def test_stan_ranking_does_not_depend_on_the_scoring_time():
    # the recency decay is taken relative to the newest candidate: a constant per row, so
    # the same history scored with or without timestamps gives the same scores
    m = create_model("stan", _vocab()).fit(_data())
    a = m.score(SequenceBatch(items=[np.array([4, 1], np.int32)]))
    b = m.score(SequenceBatch(items=[np.array([4, 1], np.int32)],
                              timestamps_ms=[np.array([10 * DAY_MS, 11 * DAY_MS])]))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", KNN)
def test_empty_and_unknown_histories_fall_back_to_popularity(name):
    m = create_model(name, _vocab()).fit(_data())
    sc = m.score(SequenceBatch(items=[np.zeros(0, np.int32), np.array([0, 0], np.int32)]))
    for row in sc:
        assert np.isneginf(row[0]) and (row[1:] < 0).all()
        assert int(np.argmax(row[1:])) + 1 == 2  # item 2 has the most clicks


@pytest.mark.parametrize("name", KNN)
def test_batch_rows_are_scored_independently(name):
    m = create_model(name, _vocab()).fit(_data())
    hists = [[1, 2], [4, 1], [6], [5, 5, 3]]
    together = m.score(SequenceBatch(items=[np.array(h, np.int32) for h in hists]))
    for r, h in enumerate(hists):
        alone = m.score(SequenceBatch(items=[np.array(h, np.int32)]))[0]
        np.testing.assert_allclose(together[r], alone, rtol=1e-6)
    m.MAX_PAIRS = 3  # rows scored in groups of a few (row, candidate) pairs: the same scores
    chunked = m.score(SequenceBatch(items=[np.array(h, np.int32) for h in hists]))
    np.testing.assert_array_equal(chunked, together)


@pytest.mark.parametrize("name", KNN)
def test_fits_without_timestamps(name):
    # sequence order stands for recency (sampling picks the same sessions); STAN's time
    # decay needs a clock, so it is off here (lambda_snh 0) on both sides
    cfg = {"lambda_snh": 0} if name in ("stan", "vstan") else {}
    with_t = _scores(name, [4, 1], _data(True), sample_size=2, **cfg)
    without = _scores(name, [4, 1], _data(False), sample_size=2, **cfg)
    np.testing.assert_array_equal(np.argsort(-with_t), np.argsort(-without))


@pytest.mark.parametrize("name", KNN)
def test_save_load_round_trip_and_verify(name, tmp_path):
    m = create_model(name, _vocab(), k=50).fit(_data())
    save_model(m, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["model"] == name and cfg["config"]["k"] == 50
    loaded = load_model(tmp_path / "ckpt", device="cpu")
    assert loaded.name == name and loaded.config == m.config
    batch = SequenceBatch(items=[np.array(h, np.int32) for h in ([1, 2], [4, 1], [6], [])])
    np.testing.assert_array_equal(loaded.score(batch), m.score(batch))
    verify_model(loaded, where=str(tmp_path / "ckpt"))


def test_damaged_session_table_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    m = create_model("vstan", _vocab()).fit(_data())
    save_model(m, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "weights.safetensors"
    arrays = load_file(str(path))
    arrays["sess_items"] = arrays["sess_items"].copy()
    arrays["sess_items"][0] = 99  # outside the 6-item vocabulary
    save_file(arrays, str(path))
    with pytest.raises(CheckpointError, match="sess_items"):
        load_model(tmp_path / "ckpt", device="cpu")
    arrays["sess_items"][0] = 1
    arrays["sess_time"] = arrays["sess_time"][:-1].copy()  # one session fewer than indptr says
    save_file(arrays, str(path))
    with pytest.raises(CheckpointError, match="sess_indptr"):
        load_model(tmp_path / "ckpt", device="cpu")


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="weighting"):
        create_model("vsknn", _vocab(), weighting="cubic")
    with pytest.raises(ValueError, match="k must be"):
        create_model("sknn", _vocab(), k=0)


@pytest.mark.parametrize("name,protocol", [("vsknn", "session"), ("stan", "temporal")])
def test_train_and_evaluate_commands(tmp_path, capsys, name, protocol):
    from model_core.datasets.synth import generate, write_jsonl
    from stream_app.cli import main

    log_path = tmp_path / "synth.jsonl"
    write_jsonl(generate(1500, seed=2), log_path)
    out = tmp_path / "ckpt"
    base = ["--data", str(log_path), "--format", "jsonl", "--protocol", protocol]
    assert main(["train", *base, "--model", name, "--out", str(out), "--quiet"]) == 0
    assert load_model(out, device="cpu").name == name
    capsys.readouterr()
    assert main(["evaluate", *base, "--model", str(out), "--ks", "10", "--bootstrap", "20",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_test_cases"] > 0 and 0 < res["metrics"]["hr@10"] <= 1


@pytest.mark.broker
def test_worker_serves_a_session_knn_checkpoint(stream_settings, tmp_path):
    """The deployed path: ``seqstream worker`` loads a VSTAN checkpoint (load_model +
    verify_model) and publishes one full top-K prediction per replayed event."""
    from model_core.datasets.synth import generate, write_jsonl
    from model_core.sequences import build_vocab, group_by_user
    from schemas import Prediction
    from stream_app.kafka.replay import replay_file
    from stream_app.kafka.topics import ensure_topics, read_topic
    from stream_app.worker.process import WorkerProcess

    events = generate(1200, seed=4)
    train, rest = events[:600], events[600:]
    vocab = build_vocab(train)
    model = create_model("vstan", vocab).fit(group_by_user(train, vocab))
    ckpt = save_model(model, tmp_path / "ckpt")
    path = tmp_path / "rest.jsonl"
    write_jsonl(rest, path)
    settings = stream_settings.with_overrides(model_path=str(ckpt), window_s=600)
    ensure_topics(settings)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        assert replay_file(settings, path, "jsonl", progress=False).sent == len(rest)
        preds = read_topic(settings, "predictions", expect=len(rest), timeout_s=120)
        worker.stop()
        assert worker.proc.returncode == 0, worker.log_text()[-2000:]
    got = [Prediction.from_json(m.value) for m in preds]
    assert {p.event_id for p in got} == {e.event_id for e in rest}
    for p in got[:100]:
        assert p.model_version.startswith("vstan-")
        assert len(p.items) == settings.top_k and p.scores == sorted(p.scores, reverse=True)
