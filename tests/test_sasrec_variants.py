"""SASRec options: the paper's block shape, the bfloat16 loss, learning-rate schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_core.checkpoint import load_model, save_model
from model_core.models import create_model
from model_core.models.base import NegativeSampler
from model_core.models.data import Padded
from model_core.models.sasrec import _hits, _LogSumExpBF16
from model_core.predictor import SequenceBatch
from model_core.train import lr_factor, train_model
from model_core.vocab import ItemVocab

N = 30
PAPER = {"block": "sasrec", "ffn_mult": 1, "act": "relu", "attn_dropout": 0.1}
VOCAB = ItemVocab(str(i) for i in range(1, N + 1))


def _model(seed=0, **over):
    cfg = {"dim": 16, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 12, **over}
    return create_model("sasrec", VOCAB, seed=seed, **cfg)


def _cycle(n_seqs=80, seed=0):
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_seqs):
        n = int(rng.integers(4, 12))
        seqs.append(((int(rng.integers(0, N)) + np.arange(n)) % N + 1).astype(np.int32))
    return [s[:-1] for s in seqs], ([s[:-1] for s in seqs], np.array([s[-1] for s in seqs]))


def test_paper_block_shape_and_config():
    m = _model(**PAPER)
    blk = m.module.blocks[0]
    assert blk.block == "sasrec"
    assert blk.ff[0].out_features == 16 and isinstance(blk.ff[1], torch.nn.ReLU)
    assert blk.p_attn == 0.1
    assert m.config["block"] == "sasrec" and m.config["ffn_mult"] == 1 and m.config["act"] == "relu"
    d = _model()  # default: pre-norm, 4 * dim GELU, no attention dropout
    assert d.module.blocks[0].block == "prenorm" and d.module.blocks[0].ff[0].out_features == 64
    assert isinstance(d.module.blocks[0].ff[1], torch.nn.GELU)
    with pytest.raises(ValueError, match="unknown block"):
        _model(block="postnorm")
    with pytest.raises(ValueError, match="unknown activation"):
        _model(act="tanh")


@pytest.mark.parametrize("over", [{}, PAPER])
def test_right_padding_does_not_change_real_positions(over):
    m = _model(**over).module.eval()
    x = torch.tensor([[3, 4, 5, 6, 0, 0, 0], [7, 8, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([4, 2])
    with torch.no_grad():
        full = m.encode(x, lengths)
        short = m.encode(x[:, :4], lengths)
        alone = m.encode(x[1:, :2], lengths[1:])
    torch.testing.assert_close(full[:, :4], short)
    torch.testing.assert_close(full[1:, :2], alone)
    # and the output at position t depends on positions <= t only (causal)
    y = x.clone()
    y[0, 3] = 9
    with torch.no_grad():
        changed = m.encode(y, lengths)
    torch.testing.assert_close(changed[0, :3], full[0, :3])
    assert not torch.allclose(changed[0, 3], full[0, 3])


@pytest.mark.parametrize("over", [{}, PAPER])
def test_seeded_training_is_deterministic(over):
    train, _ = _cycle()
    cfg = {"dim": 16, "heads": 2, "layers": 1, "max_len": 10, "batch_size": 16, "epochs": 2,
           "threads": 1, "device": "cpu", "lr": 0.01, "loss": "sampled", "negatives": 8,
           "lr_schedule": "cosine", "warmup_epochs": 0.5, **over}
    a, _ = train_model("sasrec", train, None, config=cfg, progress=False, seed=3, vocab=VOCAB)
    b, _ = train_model("sasrec", train, None, config=cfg, progress=False, seed=3, vocab=VOCAB)
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values(),
                           strict=True):
        assert torch.equal(va, vb), k


def test_paper_block_learns_and_round_trips(tmp_path):
    train, (hist, targets) = _cycle()
    valid = {"histories": hist, "targets": targets}
    cfg = {"dim": 16, "heads": 1, "layers": 1, "max_len": 10, "batch_size": 16, "epochs": 12,
           "threads": 1, "device": "cpu", "lr": 0.01, "dropout": 0.0, "patience": 12,
           **PAPER, "attn_dropout": 0.0}
    m, h = train_model("sasrec", train, valid, config=cfg, progress=False, seed=0, vocab=VOCAB)
    assert h.best_valid["hr@10"] > 0.95
    save_model(m, tmp_path / "m")
    back = load_model(tmp_path / "m", device="cpu")
    assert back.module.blocks[0].block == "sasrec"
    b = SequenceBatch(items=[np.array([1, 2, 3], np.int32), np.array([5], np.int32)])
    np.testing.assert_allclose(m.score(b), back.score(b), rtol=1e-6)


def test_config_without_new_fields_loads_with_old_behaviour():
    # a config.json written before block/ffn_mult/act/loss_dtype existed
    old = {"dim": 16, "layers": 1, "heads": 1, "dropout": 0.2, "attn_dropout": 0.0,
           "loss": "sampled", "max_len": 12}
    m = create_model("sasrec", VOCAB, **old)
    assert m.module.blocks[0].block == "prenorm" and m.module.loss_dtype == "float32"
    assert m.module.blocks[0].ff[0].out_features == 64
    keys = set(m.module.state_dict())
    assert "blocks.0.ff.3.weight" in keys and "blocks.0.qkv.weight" in keys


def test_hits_finds_every_negative_equal_to_a_target():
    g = torch.Generator().manual_seed(0)
    neg = torch.randint(1, 12, (40,), generator=g)
    y = torch.randint(1, 14, (25,), generator=g)
    rows, cols = _hits(neg, y)
    got = sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    want = sorted((i, j) for i in range(len(y)) for j in range(len(neg)) if neg[j] == y[i])
    assert got == want and len(want) > 0


def test_bf16_logsumexp_matches_float32():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(50, 16, generator=g, requires_grad=True)
    w = (torch.randn(300, 16, generator=g) * 0.5).requires_grad_()
    rows, cols = torch.tensor([0, 0, 7]), torch.tensor([3, 9, 100])
    lse = _LogSumExpBF16.apply(h, w, rows, cols)
    s = h @ w.t()
    mask = torch.zeros_like(s, dtype=torch.bool)
    mask[rows, cols] = True
    ref = torch.logsumexp(s.masked_fill(mask, -math.inf), -1)
    torch.testing.assert_close(lse, ref, rtol=0, atol=0.1)
    gr = torch.randn(50, generator=g)
    dh, dw = torch.autograd.grad(lse, (h, w), gr)
    rh, rw = torch.autograd.grad(ref, (h, w), gr)
    assert float((dh - rh).norm() / rh.norm()) < 0.05
    assert float((dw - rw).norm() / rw.norm()) < 0.05
    assert float(dw[100].abs().sum()) != 0  # column 100 is masked in row 7 only


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_bf16_loss_is_close_to_float32(loss):
    a = _model(loss=loss, negatives=20, sparse_emb=False)
    b = _model(loss=loss, negatives=20, sparse_emb=False, loss_dtype="bfloat16")
    assert b.config["loss_dtype"] == "bfloat16"
    b.module.load_state_dict(a.module.state_dict())
    x = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]])
    batch = Padded(x, torch.tensor([4, 3]), None, None)
    tg = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 0]])
    out = []
    for m in (a, b):
        m.module.eval()  # no dropout: the same scores
        sampler = NegativeSampler(N, None, 0.0, "cpu", seed=5)  # the same negatives
        loss_v, _ = m.module.loss(batch, tg, None, sampler)
        loss_v.backward()
        out.append((float(loss_v.detach()), m.module.item_emb.id_emb.weight.grad.clone()))
    assert out[1][0] == pytest.approx(out[0][0], abs=0.05)
    rel = float((out[1][1] - out[0][1]).norm() / out[0][1].norm())
    assert rel < 0.05


def test_bf16_loss_rejects_unsupported_losses():
    with pytest.raises(ValueError, match="bfloat16 applies"):
        _model(loss="gbce", loss_dtype="bfloat16")
    with pytest.raises(ValueError, match="bfloat16 applies"):
        _model(loss="sampled", in_batch=True, loss_dtype="bfloat16")
    with pytest.raises(ValueError, match="unknown loss_dtype"):
        _model(loss_dtype="float16")


def test_lr_factor_schedules():
    assert lr_factor("constant", 0.7) == 1.0
    assert lr_factor("constant", 0.05, warm=0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0, floor=0.1) == pytest.approx(0.1)
    assert lr_factor("linear", 0.55, warm=0.1) == pytest.approx(0.5)
    assert lr_factor("linear", 2.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 0.5)


def test_schedule_decays_the_learning_rate_over_the_epochs():
    train, _ = _cycle()
    cfg = {"dim": 16, "heads": 1, "layers": 1, "max_len": 10, "batch_size": 16, "epochs": 4,
           "threads": 1, "device": "cpu", "lr": 0.01, "lr_schedule": "linear",
           "min_lr_ratio": 0.1}
    _, h = train_model("sasrec", train, None, config=cfg, progress=False, seed=0, vocab=VOCAB)
    lrs = [e["lr"] for e in h.epochs]  # the rate of each epoch's last step
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.01
    assert lrs[-1] == pytest.approx(0.001, rel=0.2)
    _, c = train_model("sasrec", train, None, config={**cfg, "lr_schedule": "constant"},
                       progress=False, seed=0, vocab=VOCAB)
    assert [e["lr"] for e in c.epochs] == [0.01] * 4
    with pytest.raises(ValueError, match="lr_schedule"):
        train_model("sasrec", train, None, config={**cfg, "lr_schedule": "step"},
                    progress=False, seed=0, vocab=VOCAB)
