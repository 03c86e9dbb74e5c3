"""One suite over every model: the Recommender contract, checkpoints, padding, seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_core.checkpoint import load_model, read_meta, save_model
from model_core.exceptions import CheckpointError
from model_core.models import MODELS, NEURAL_MODELS, create_model
from model_core.models.data import as_seqdata, pad_batch
from model_core.models.item_embedding import ItemEmbedding
from model_core.predictor import Recommender, SequenceBatch
from model_core.train import train_model
from model_core.vocab import ItemVocab
from schemas import N_ACTIONS

N_ITEMS = 40
TINY = {"dim": 16, "epochs": 2, "batch_size": 16, "max_len": 12, "threads": 1, "device": "cpu",
        "features": ["action", "category", "gap"], "layers": 1}


def _config(name: str, **over) -> dict:
    if name not in NEURAL_MODELS:
        return {}
    cfg = dict(TINY)
    if name == "sasrec":
        cfg["heads"] = 2
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def data():
    """Sequences with structure (item i is usually followed by i + 1), actions and times."""
    rng = np.random.default_rng(0)
    items, actions, ts = [], [], []
    for _ in range(60):
        n = int(rng.integers(3, 20))
        start = int(rng.integers(1, N_ITEMS + 1))
        seq = (start - 1 + np.arange(n)) % N_ITEMS + 1
        noise = rng.random(n) < 0.1
        seq[noise] = rng.integers(1, N_ITEMS + 1, noise.sum())
        items.append(seq.astype(np.int32))
        actions.append(rng.integers(0, N_ACTIONS, n).astype(np.uint8))
        ts.append(1_700_000_000_000 + np.cumsum(rng.integers(1_000, 5_000_000, n)).astype(np.int64))
    vocab = ItemVocab(f"i{k}" for k in range(1, N_ITEMS + 1))
    cats = np.concatenate([[0], (np.arange(N_ITEMS) % 5) + 1]).astype(np.int64)
    return {"items": items, "actions": actions, "timestamps_ms": ts, "vocab": vocab,
            "cats": cats}


def _train(name, data, seed=0, **over):
    seqs = as_seqdata({"items": data["items"], "actions": data["actions"],
                       "timestamps_ms": data["timestamps_ms"]}, data["cats"])
    model, _ = train_model(name, seqs, None, config=_config(name, **over), progress=False,
                           seed=seed, vocab=data["vocab"])
    return model


@pytest.fixture(scope="module")
def trained(data):
    return {name: _train(name, data) for name in MODELS}


def _batch(data, rows=(0, 1, 2, 3)):
    return SequenceBatch(items=[data["items"][r] for r in rows],
                         actions=[data["actions"][r] for r in rows],
                         timestamps_ms=[data["timestamps_ms"][r] for r in rows])


def test_registry_lists_every_model_and_rejects_unknown(data):
    assert set(MODELS) == {"popular", "markov", "itemknn", "sknn", "vsknn", "stan", "vstan",
                           "gru4rec", "sasrec"}
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope", data["vocab"])


@pytest.mark.parametrize("name", list(MODELS))
def test_contract_shapes(trained, data, name):
    m = trained[name]
    assert isinstance(m, Recommender)
    assert m.name == name
    b = _batch(data)
    sc = m.score(b)
    assert sc.shape == (4, N_ITEMS + 1) and sc.dtype == np.float32
    assert np.all(np.isneginf(sc[:, 0])) and np.all(np.isfinite(sc[:, 1:]))
    top = m.predict_topk(b, 5)
    assert top.items.shape == (4, 5) and top.items.dtype == np.int64
    assert top.scores.shape == (4, 5) and top.scores.dtype == np.float32
    assert (top.items > 0).all()
    # top-K agrees with score(): best first, same values
    for r in range(4):
        np.testing.assert_allclose(top.scores[r], np.sort(sc[r, 1:])[::-1][:5], rtol=1e-5)
        np.testing.assert_allclose(sc[r, top.items[r]], top.scores[r], rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_round_trip(trained, data, name, tmp_path):
    m = trained[name]
    save_model(m, tmp_path / "ckpt", {"split": {"protocol": "test"}})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "meta.json", "vocab.json", "weights.safetensors"]
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["model"] == name
    meta = read_meta(tmp_path / "ckpt")
    assert meta["split"] == {"protocol": "test"} and meta["model_version"] == m.version
    loaded = load_model(tmp_path / "ckpt", device="cpu")
    assert loaded.name == name and loaded.version == m.version
    assert loaded.vocab.fingerprint() == m.vocab.fingerprint()
    b = _batch(data)
    a, c = m.predict_topk(b, 7, exclude_history=True), loaded.predict_topk(b, 7, exclude_history=True)
    np.testing.assert_array_equal(a.items, c.items)
    np.testing.assert_allclose(a.scores, c.scores, rtol=1e-6)
    if a.action_probs is None:
        assert c.action_probs is None
    else:
        np.testing.assert_allclose(a.action_probs, c.action_probs, rtol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_composition_and_padding_invariance(trained, data, name):
    """A row's scores do not depend on the other rows (and so on the padding width)."""
    m = trained[name]
    short = _batch(data, rows=(5,))
    lens = [len(s) for s in data["items"]]
    longest = int(np.argmax(lens))
    mixed = _batch(data, rows=(5, longest))
    np.testing.assert_allclose(m.score(short)[0, 1:], m.score(mixed)[0, 1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_module_padding_invariance(trained, data, name):
    m = trained[name]
    b = _batch(data, rows=(0,))
    p = m.pad(b)
    with torch.no_grad():
        h = m.module(p.items, p.lengths, p.actions, p.gaps)
        wide = torch.nn.functional.pad(p.items, (0, 3))
        wa = torch.nn.functional.pad(p.actions, (0, 3))
        wg = torch.nn.functional.pad(p.gaps, (0, 3))
        h2 = m.module(wide, p.lengths, wa, wg)
    torch.testing.assert_close(h, h2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_seeded_determinism(data, name):
    a, b = _train(name, data, seed=3), _train(name, data, seed=3)
    batch = _batch(data)
    np.testing.assert_array_equal(a.score(batch), b.score(batch))
    if name in NEURAL_MODELS:
        c = _train(name, data, seed=4)
        assert not np.allclose(a.score(batch)[:, 1:], c.score(batch)[:, 1:])


@pytest.mark.parametrize("name", list(MODELS))
def test_unknown_items_are_dropped_not_fatal(trained, data, name):
    m = trained[name]
    seq = data["items"][0]
    with_unknown = np.concatenate([[0], seq[:2], [0], seq[2:], [0]]).astype(np.int32)
    acts = data["actions"][0]
    ts = data["timestamps_ms"][0]
    a_unk = np.concatenate([[1], acts[:2], [2], acts[2:], [3]]).astype(np.uint8)
    t_unk = np.concatenate([[ts[0] - 5], ts[:2], [ts[1] + 1], ts[2:], [ts[-1] + 1]])
    clean = SequenceBatch(items=[seq], actions=[acts], timestamps_ms=[ts])
    dirty = SequenceBatch(items=[with_unknown], actions=[a_unk], timestamps_ms=[t_unk])
    np.testing.assert_allclose(m.score(clean), m.score(dirty), rtol=1e-5, atol=1e-6)
    # empty and all-unknown histories, and a batch without actions/timestamps
    odd = SequenceBatch(items=[np.zeros(0, np.int32), np.zeros(3, np.int32), seq])
    top = m.predict_topk(odd, 5, exclude_history=True)
    assert top.items.shape == (3, 5) and (top.items > 0).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_exclude_history_and_large_k(trained, data, name):
    m = trained[name]
    b = _batch(data, rows=(0, 1))
    top = m.predict_topk(b, 10, exclude_history=True)
    for r in range(2):
        assert not set(top.items[r].tolist()) & set(b.items[r].tolist())
    big = m.predict_topk(b, 10_000)
    assert big.items.shape == (2, N_ITEMS)
    assert sorted(big.items[0].tolist()) == list(range(1, N_ITEMS + 1))


@pytest.mark.parametrize("name", list(MODELS))
def test_next_action_probabilities(trained, data, name):
    m = trained[name]
    top = m.predict_topk(_batch(data), 3)
    if name == "itemknn":
        pytest.skip("item-kNN predicts the marginal action distribution only")
    assert top.action_probs is not None
    assert top.action_probs.shape == (4, N_ACTIONS)
    np.testing.assert_allclose(top.action_probs.sum(1), 1.0, rtol=1e-5)
    assert (top.action_probs >= 0).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_gru_step_equals_full_forward(data, cell, layers):
    m = _train("gru4rec", data, cell=cell, layers=layers, hidden=24)
    seq, acts, ts = data["items"][7], data["actions"][7], data["timestamps_ms"][7]
    state = m.init_state(1)
    assert state.shape == (1, layers * 24 * (2 if cell == "lstm" else 1))
    prev = None
    for i, a, t in zip(seq, acts, ts, strict=True):
        gap = np.array([-1 if prev is None else t - prev])
        state = m.step(state, np.array([i]), np.array([a]), gap)
        prev = t
    full = m.predict_topk(SequenceBatch(items=[seq], actions=[acts], timestamps_ms=[ts]), 10)
    inc = m.predict_topk_from_state(state, 10)
    np.testing.assert_array_equal(full.items, inc.items)
    np.testing.assert_allclose(full.scores, inc.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full.action_probs, inc.action_probs, rtol=1e-4, atol=1e-6)
    # an unknown item leaves the state unchanged
    np.testing.assert_array_equal(m.step(state, np.array([0]), np.array([0])), state)


def test_gru_step_batches_users(data):
    m = _train("gru4rec", data)
    st = m.init_state(2)
    st2 = m.step(st, np.array([3, 9]), np.array([0, 1]), np.array([-1, -1]))
    one = m.step(m.init_state(1), np.array([9]), np.array([1]), np.array([-1]))
    np.testing.assert_allclose(st2[1:], one, rtol=1e-5, atol=1e-6)
    top = m.predict_topk_from_state(st2, 4, exclude=[np.array([3]), np.array([9])])
    assert 3 not in top.items[0] and 9 not in top.items[1]


@pytest.mark.parametrize("loss", ["ce", "sampled", "gbce"])
@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_each_loss_trains(data, name, loss):
    m = _train(name, data, loss=loss, negatives=8, in_batch=(loss == "sampled"))
    assert m.config["loss"] == loss
    assert np.isfinite(m.score(_batch(data))[:, 1:]).all()


def test_sampled_softmax_with_popularity_negatives_and_logq(data):
    m = _train("gru4rec", data, loss="sampled", negatives=16, sample_alpha=0.75, logq=True)
    assert np.isfinite(m.score(_batch(data))[:, 1:]).all()


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_side_features_change_the_input(data, combine):
    m = _train("sasrec", data, combine=combine)
    enc = m.module.inputs
    assert enc.uses_actions and enc.uses_gaps and enc.use_category
    assert int(enc.item_categories[1]) == int(data["cats"][1])
    b = _batch(data, rows=(0,))
    other = SequenceBatch(items=b.items, actions=[(b.actions[0] + 1) % N_ACTIONS],
                          timestamps_ms=b.timestamps_ms)
    assert not np.allclose(m.score(b), m.score(other))


def test_item_embedding_text_and_fused_modes():
    n, dim, tdim = 10, 8, 5
    vec = torch.randn(n + 1, tdim)
    for mode in ("text", "fused"):
        emb = ItemEmbedding(n, dim, mode=mode, text_vectors=vec)
        assert emb.item_matrix().shape == (n + 1, dim)
        assert emb.rows(torch.tensor([[1, 2]])).shape == (1, 2, dim)
        assert not emb.text_vectors.requires_grad and float(emb.text_vectors[0].abs().sum()) == 0
        assert "text_vectors" in emb.state_dict()
    with pytest.raises(ValueError, match="shape"):
        ItemEmbedding(n, dim, mode="text", text_dim=tdim).set_text_vectors(torch.zeros(3, tdim))
    with pytest.raises(ValueError, match="needs text vectors"):
        ItemEmbedding(n, dim, mode="fused")
    with pytest.raises(ValueError, match="id"):
        ItemEmbedding(n, dim).set_text_vectors(vec)


def test_text_mode_model_round_trip(data, tmp_path):
    m = create_model("sasrec", data["vocab"], dim=8, heads=1, layers=1, item_mode="fused",
                     text_dim=6)
    m.module.item_emb.set_text_vectors(torch.randn(N_ITEMS + 1, 6))
    save_model(m, tmp_path / "t")
    loaded = load_model(tmp_path / "t", device="cpu")
    np.testing.assert_allclose(m.score(_batch(data)), loaded.score(_batch(data)), rtol=1e-6)


def test_pad_batch_keeps_the_last_events():
    p = pad_batch([np.array([1, 0, 2, 3, 4]), np.array([], np.int32)], None, None, max_len=3)
    assert p.items.tolist() == [[2, 3, 4], [0, 0, 0]]
    assert p.lengths.tolist() == [3, 1]


# --------------------------------------------------------------------------- checkpoint errors
def test_load_errors_are_clear(trained, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing")
    d = tmp_path / "c"
    save_model(trained["sasrec"], d)
    (d / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="missing meta.json"):
        load_model(d)
    save_model(trained["sasrec"], d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model": "evil"}))
    with pytest.raises(CheckpointError, match="unknown model 'evil'"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({**cfg, "config": {**cfg["config"], "dim": 32}}))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(d)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(d)
    save_model(trained["markov"], d)
    (d / "vocab.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(CheckpointError, match="items but vocab.json"):
        load_model(d)


def test_weights_file_holds_no_pickle(trained, tmp_path):
    for name, m in trained.items():
        save_model(m, tmp_path / name)
        raw = (tmp_path / name / "weights.safetensors").read_bytes()
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8: 8 + header_len])
        assert all("dtype" in v for k, v in header.items() if k != "__metadata__")
