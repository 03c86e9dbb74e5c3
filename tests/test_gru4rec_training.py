"""GRU4Rec training options: Adagrad with momentum, time-ordered batches, output bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_core.models.data import SeqData, by_start_time, session_parallel_steps
from model_core.models.optim import AdagradM
from model_core.predictor import SequenceBatch
from model_core.train import TIME_BLOCK, Cases, _batches, build_rows, train_model
from model_core.vocab import ItemVocab

N = 20
FAST = {"dim": 16, "batch_size": 8, "max_len": 10, "threads": 1, "device": "cpu"}


def _cycle_data(n_seqs=80, seed=0):
    """After item i comes i + 1 (mod N); sequences carry increasing start times."""
    rng = np.random.default_rng(seed)
    seqs, ts = [], []
    for k in range(n_seqs):
        n = int(rng.integers(4, 12))
        start = int(rng.integers(0, N))
        seqs.append(((start + np.arange(n)) % N + 1).astype(np.int32))
        ts.append((1_000_000 * (n_seqs - k) + 1000 * np.arange(n)).astype(np.int64))
    vocab = ItemVocab(str(i) for i in range(1, N + 1))
    train = SeqData(items=[s[:-1] for s in seqs], timestamps_ms=[t[:-1] for t in ts])
    valid = Cases(SequenceBatch(items=[s[:-1] for s in seqs]),
                  np.array([s[-1] for s in seqs], dtype=np.int64))
    return vocab, train, valid


# ----------------------------------------------------------------------------- AdagradM
def test_adagrad_dense_steps_match_hand_computation():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdagradM([p], lr=0.5, momentum=0.5, eps=1e-6)
    grads = [torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])]
    acc, mom, x = np.zeros(2), np.zeros(2), np.array([1.0, -2.0])
    for g in grads:
        p.grad = g.clone()
        opt.step()
        gn = g.numpy().astype(np.float64)
        acc += gn * gn
        mom = 0.5 * mom - 0.5 * gn / np.sqrt(acc + 1e-6)
        x = x + mom
    # by hand for the first coordinate: step 1: acc 4, mom -0.5, x 0.5;
    # step 2: acc 5, mom -0.25 - 0.5/sqrt(5), x 0.5 + mom
    assert x[0] == pytest.approx(0.5 - 0.25 - 0.5 / np.sqrt(5), abs=1e-6)
    assert p.detach().numpy() == pytest.approx(x, abs=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.3])
def test_adagrad_sparse_rows_equal_dense_and_leave_other_rows_alone(momentum):
    torch.manual_seed(0)
    w0 = torch.randn(6, 3)
    dense = torch.nn.Embedding(6, 3)
    sparse = torch.nn.Embedding(6, 3, sparse=True)
    for e in (dense, sparse):
        with torch.no_grad():
            e.weight.copy_(w0)
    od = AdagradM(dense.parameters(), lr=0.1, momentum=momentum)
    osp = AdagradM(sparse.parameters(), lr=0.1, momentum=momentum)
    for idx in ([1, 1, 4], [4, 2]):  # a repeated row: the sparse gradient is coalesced
        for e, o in ((dense, od), (sparse, osp)):
            o.zero_grad()
            e(torch.tensor(idx)).pow(2).sum().backward()
            o.step()
    # rows with a gradient at every step agree; without momentum every row does (a zero
    # dense gradient moves nothing), with it the dense row 1 keeps moving in step 2
    same = [0, 1, 2, 3, 4, 5] if momentum == 0 else [2, 4]
    assert torch.allclose(dense.weight[same], sparse.weight[same], atol=1e-6)
    assert not torch.equal(sparse.weight[1], w0[1])
    for untouched in (0, 3, 5):
        assert torch.equal(sparse.weight[untouched], w0[untouched])


def test_adagrad_rejects_bad_settings():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="momentum"):
        AdagradM(p, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="learning rate"):
        AdagradM(p, lr=0.0)


# ----------------------------------------------------------------------------- time order
def test_by_start_time_orders_sequences_and_keeps_them_aligned():
    data = SeqData(items=[np.array([1, 2], np.int32), np.array([3], np.int32),
                          np.array([4, 5, 6], np.int32)],
                   actions=[np.array([0, 1], np.uint8), np.array([2], np.uint8),
                            np.array([0, 0, 1], np.uint8)],
                   timestamps_ms=[np.array([30, 31]), np.array([10]), np.array([20, 21, 22])])
    out = by_start_time(data)
    assert [s.tolist() for s in out.items] == [[3], [4, 5, 6], [1, 2]]
    assert [a.tolist() for a in out.actions] == [[2], [0, 0, 1], [0, 1]]
    assert [t.tolist() for t in out.timestamps_ms] == [[10], [20, 21, 22], [30, 31]]
    no_time = SeqData(items=data.items)
    assert by_start_time(no_time) is no_time


def test_time_order_batches_keep_blocks_in_order():
    n_rows = 2 * TIME_BLOCK * 3 + 5  # three full blocks of batch size 2, and a short one
    lens = np.random.default_rng(1).integers(1, 9, n_rows)
    rows = build_rows(SeqData(items=[np.arange(1, n + 2, dtype=np.int32) for n in lens]),
                      max_len=10)
    b = _batches(rows, 2, np.random.default_rng(0), "time")
    assert sorted(int(i) for x in b for i in x) == list(range(n_rows))  # every row once
    block_of = [{int(i) // (2 * TIME_BLOCK) for i in x} for x in b]
    assert all(len(s) == 1 for s in block_of)  # a batch never spans two blocks
    blocks = [s.pop() for s in block_of]
    assert blocks == sorted(blocks)  # blocks come in time order
    with pytest.raises(ValueError, match="batch_order"):
        _batches(rows, 2, np.random.default_rng(0), "random")


@pytest.mark.parametrize("extra", [
    {"optimizer": "adagrad", "lr": 0.2, "momentum": 0.2, "batch_order": "time"},
    {"optimizer": "adagrad", "lr": 0.2, "loss": "sampled", "in_batch": True, "negatives": 8,
     "sample_alpha": 0.5, "logq": True, "bias": True},
    {"lr": 0.03, "bias": True, "final_act": "tanh", "init": "uniform"},
])
def test_gru4rec_learns_with_official_style_options(extra):
    vocab, train, valid = _cycle_data()
    model, hist = train_model("gru4rec", train, valid,
                              config={**FAST, "epochs": 15, "patience": 15, **extra},
                              progress=False, seed=0, vocab=vocab)
    assert hist.best_valid["hr@10"] > 0.9


def test_unknown_optimizer_is_a_clear_error():
    vocab, train, _ = _cycle_data(10)
    with pytest.raises(ValueError, match="optimizer"):
        train_model("gru4rec", train, None, config={**FAST, "epochs": 1, "optimizer": "sgd"},
                    progress=False, vocab=vocab)


# ----------------------------------------------------------------------------- session-parallel
def test_session_parallel_steps_on_a_tiny_log():
    seqs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([9]), np.array([6, 7, 8, 1])]
    steps = session_parallel_steps(seqs, 2)
    got = [(s.inputs.tolist(), s.targets.tolist(), s.prev.tolist()) for s in steps]
    # lanes: A=[1,2,3] and B=[4,5]; B ends after one step, [9] has no target and is
    # skipped, so D=[6,7,8,1] takes lane 2 with a fresh state; A ends, lane 1 closes
    assert got == [([1, 4], [2, 5], [-1, -1]),
                   ([2, 6], [3, 7], [0, -1]),
                   ([7], [8], [1]),
                   ([8], [1], [0])]
    pairs = sorted((i, t) for s in steps for i, t in zip(s.inputs, s.targets, strict=True))
    assert pairs == sorted([(1, 2), (2, 3), (4, 5), (6, 7), (7, 8), (8, 1)])


def test_parallel_state_continues_the_previous_rows():
    """A lane's state after its steps equals the full forward of its sequence (eval mode)."""
    vocab, train, _ = _cycle_data(6)
    model, _ = train_model("gru4rec", train, None, config={**FAST, "epochs": 1,
                                                           "action_head": False},
                           progress=False, seed=0, vocab=vocab)
    m = model.module.eval()
    seqs = [np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7, 8, 9])]
    state, last = None, {}
    with torch.no_grad():
        lane_seq = {}
        for s in session_parallel_steps(seqs, 2):
            for b, p in enumerate(s.prev.tolist()):
                lane_seq[b] = lane_seq[p] if p >= 0 else [x for x in seqs
                                                          if x[0] == s.inputs[b]][0]
            lane_seq = {b: lane_seq[b] for b in range(len(s.inputs))}
            _, state = m.parallel_loss(state, torch.from_numpy(s.inputs),
                                       torch.from_numpy(s.targets), torch.from_numpy(s.prev),
                                       None)
            for b in range(len(s.inputs)):
                last[int(lane_seq[b][0])] = state[b].clone()
        for x in seqs:
            full = m.encode(torch.from_numpy(x[:-1]).view(1, -1), torch.tensor([len(x) - 1]))
            assert torch.allclose(m.proj(last[int(x[0])]), full[0, -1], atol=1e-5)


def test_parallel_order_trains_and_rejects_what_it_cannot_train():
    vocab, train, valid = _cycle_data()
    cfg = {**FAST, "epochs": 12, "patience": 12, "batch_order": "parallel", "action_head": False,
           "optimizer": "adagrad", "lr": 0.2, "momentum": 0.2, "loss": "sampled",
           "in_batch": True, "negatives": 8, "sample_alpha": 0.5, "logq": True, "bias": True,
           "grad_clip": 0}
    _, hist = train_model("gru4rec", train, valid, config=cfg, progress=False, seed=0,
                          vocab=vocab)
    assert hist.best_valid["hr@10"] > 0.9
    # every (event, next event) pair once per epoch
    assert hist.train_events == len(hist.epochs) * sum(len(s) - 1 for s in train.items)
    with pytest.raises(ValueError, match="recurrent"):
        sas = {k: v for k, v in cfg.items() if k != "bias"}
        train_model("sasrec", train, None, config={**sas, "epochs": 1, "heads": 1},
                    progress=False, vocab=vocab)
    with pytest.raises(ValueError, match="side features"):
        train_model("gru4rec", train, None, config={**cfg, "epochs": 1, "features": ["gap"]},
                    progress=False, vocab=vocab)


def test_parallel_order_with_a_decaying_learning_rate():
    """The schedule counts session-parallel steps: Adagrad's rate ends at lr * min_lr_ratio;
    embedding dropout trains too, and the run is seeded."""
    vocab, train, valid = _cycle_data()
    cfg = {**FAST, "epochs": 6, "patience": 6, "batch_order": "parallel", "action_head": False,
           "optimizer": "adagrad", "lr": 0.2, "momentum": 0.2, "grad_clip": 0,
           "lr_schedule": "cosine", "min_lr_ratio": 0.05, "embed_dropout": 0.1}
    a, hist = train_model("gru4rec", train, valid, config=cfg, progress=False, seed=1,
                          vocab=vocab)
    lrs = [e["lr"] for e in hist.epochs]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.01, rel=1e-3)
    assert a.config["embed_dropout"] == 0.1
    b, _ = train_model("gru4rec", train, valid, config=cfg, progress=False, seed=1, vocab=vocab)
    np.testing.assert_array_equal(a.score(valid.histories), b.score(valid.histories))


def test_uniform_init_bounds_and_bad_names():
    from model_core.models.gru4rec import GRU4RecModule

    m = GRU4RecModule(n_items=30, dim=8, init="uniform")
    a_item = (6.0 / (31 + 8)) ** 0.5
    w = m.item_emb.id_emb.weight.detach()
    assert float(w.abs().max()) <= a_item and float(w[1:].abs().max()) > a_item / 2
    assert float(w[0].abs().max()) == 0.0
    assert float(m.rnn.weight_hh_l0.detach().abs().max()) <= (6.0 / 16) ** 0.5
    assert float(m.rnn.bias_ih_l0.detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match="init"):
        GRU4RecModule(n_items=30, dim=8, init="xavier")
    with pytest.raises(ValueError, match="final activation"):
        GRU4RecModule(n_items=30, dim=8, final_act="relu")


def test_train_command_with_gru4rec_official_options(tmp_path, capsys):
    """A tiny YooChoose-format log, session protocol with a test file, GRU4Rec's settings."""
    from model_core.checkpoint import load_model, read_meta
    from stream_app.cli import main

    rng = np.random.default_rng(0)

    def write(path, first_sid, n_sessions, t0):
        lines = ["SessionId\tItemId\tTime"]
        for s in range(first_sid, first_sid + n_sessions):
            start = int(rng.integers(0, N))
            for k in range(int(rng.integers(2, 6))):
                lines.append(f"{s}\t{(start + k) % N + 1}\t{t0 + 100 * s + k}.0")
        path.write_text("\n".join(lines) + "\n")

    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    write(train, 1, 120, 1_400_000_000)
    write(test, 500, 20, 1_400_100_000)
    out = tmp_path / "ckpt"
    rc = main(["train", "--data", str(train), "--test", str(test), "--format", "yoochoose",
               "--protocol", "session", "--model", "gru4rec", "--out", str(out), "--dim", "16",
               "--loss", "sampled", "--in-batch", "--negatives", "8", "--sample-alpha", "0.5",
               "--logq", "--bias", "--dense-emb", "--optimizer", "adagrad", "--lr", "0.2",
               "--momentum", "0.2", "--grad-clip", "0", "--batch-order", "parallel",
               "--batch-size", "8", "--epochs", "3", "--quiet", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    meta = read_meta(out)
    cfg = meta["training"][0]["config"]
    assert cfg["batch_order"] == "parallel" and cfg["optimizer"] == "adagrad"
    assert cfg["valid_exclude_history"] is False  # session protocol: as its test ranks
    assert meta["split"]["refit"] is True and len(meta["training"]) == 2
    m = load_model(out, device="cpu")
    assert m.config["bias"] is True and m.config["sparse_emb"] is False
    assert m.trained_actions is False  # parallel steps train items only
