"""Training speed against catalogue size: the benchmark's output, and the trainer's choice of
item-embedding gradients that keeps large catalogues fast."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_core.bench_train import main, synthetic_sessions
from model_core.train import DENSE_EMB_MAX_ITEMS, train_model
from model_core.vocab import ItemVocab


def test_bench_train_prints_events_per_second_side_by_side(capsys):
    assert main(["--items", "50,400", "--seconds", "0.3", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    d = json.loads(out[-1])
    assert d["recipe"] == "gru4rec" and d["threads"] == 1
    assert [r["items"] for r in d["sizes"]] == [50, 400]
    for r in d["sizes"]:
        assert r["train_events"] > 0 and r["events_per_s"] > 0
    assert d["sizes"][0]["ratio"] == 1.0
    assert d["sizes"][1]["ratio"] == pytest.approx(
        d["sizes"][1]["events_per_s"] / d["sizes"][0]["events_per_s"], abs=1e-3)
    assert any(line.split()[0] == "400" for line in out[:-1])  # the table, one row per size


def test_bench_train_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["--items", "3k"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_synthetic_sessions_differ_only_in_their_items():
    small, large = synthetic_sessions(100, n_sessions=300), synthetic_sessions(50_000,
                                                                               n_sessions=300)
    assert [len(s) for s in small] == [len(s) for s in large]
    assert min(len(s) for s in small) >= 2
    assert max(int(s.max()) for s in small) <= 100 and min(int(s.min()) for s in small) >= 1
    assert max(int(s.max()) for s in large) > 100


@pytest.mark.parametrize("n_items,sparse", [(DENSE_EMB_MAX_ITEMS, False),
                                            (DENSE_EMB_MAX_ITEMS + 1, True)])
def test_sampled_losses_choose_embedding_gradients_by_catalogue_size(n_items, sparse):
    """Dense item-embedding gradients update every item row each step: as cheap as the sampled
    rows on a small catalogue, several times slower on a large one; the default picks."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, n_items + 1, size=5).astype(np.int32) for _ in range(20)]
    vocab = ItemVocab(str(i) for i in range(1, n_items + 1))
    cfg = {"dim": 8, "epochs": 1, "loss": "sampled", "negatives": 16, "threads": 1,
           "device": "cpu"}
    model, _ = train_model("gru4rec", seqs, None, config=cfg, progress=False, vocab=vocab)
    assert model.config["sparse_emb"] is sparse
    forced, _ = train_model("gru4rec", seqs, None, config={**cfg, "sparse_emb": False},
                            progress=False, vocab=vocab)
    assert forced.config["sparse_emb"] is False


def test_popularity_negatives_on_large_catalogues_come_from_a_buffer(monkeypatch):
    import torch

    from model_core.models.base import NegativeSampler

    n_items = NegativeSampler.BUFFER_MIN_ITEMS + 10
    counts = np.zeros(n_items + 1)
    counts[1:4] = [100.0, 300.0, 600.0]  # three items hold all the mass
    sampler = NegativeSampler(n_items, counts, alpha=1.0, seed=3)
    calls = []
    real = torch.multinomial

    def counting(*a, **kw):
        calls.append(a[1])
        return real(*a, **kw)

    monkeypatch.setattr(torch, "multinomial", counting)
    draws = torch.cat([sampler.sample(64) for _ in range(NegativeSampler.BUFFER_BATCHES * 3)])
    # one pass over the distribution per BUFFER_BATCHES batches, not one per batch
    assert len(calls) == 3 and calls[0] == 64 * NegativeSampler.BUFFER_BATCHES
    freq = np.bincount(draws.numpy(), minlength=n_items + 1)[1:4] / len(draws)
    assert freq == pytest.approx([0.1, 0.3, 0.6], abs=0.02)


def test_popularity_negatives_on_small_catalogues_keep_their_stream():
    import torch

    from model_core.models.base import NegativeSampler

    counts = np.arange(501, dtype=np.float64)
    sampler = NegativeSampler(500, counts, alpha=0.5, seed=7)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        assert torch.equal(sampler.sample(100),
                           torch.multinomial(sampler.probs, 100, replacement=True, generator=gen))
