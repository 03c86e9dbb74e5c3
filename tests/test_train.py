"""The training loop: learning, validation, early stopping, the train command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_core.checkpoint import load_model, read_meta
from model_core.models.data import SeqData
from model_core.predictor import SequenceBatch
from model_core.train import (
    Cases,
    as_cases,
    build_rows,
    item_category_table,
    train_model,
    validate,
)
from model_core.vocab import ItemVocab

N = 20
FAST = {"dim": 16, "batch_size": 16, "max_len": 10, "threads": 1, "device": "cpu"}


def _cycle_data(n_seqs=80, seed=0):
    """Deterministic successor structure: after item i comes i + 1 (mod N)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_seqs):
        n = int(rng.integers(4, 12))
        start = int(rng.integers(0, N))
        seqs.append(((start + np.arange(n)) % N + 1).astype(np.int32))
    vocab = ItemVocab(str(i) for i in range(1, N + 1))
    train = [s[:-1] for s in seqs]
    valid = Cases(SequenceBatch(items=[s[:-1] for s in seqs]),
                  np.array([s[-1] for s in seqs], dtype=np.int64))
    return vocab, train, valid


@pytest.mark.parametrize("name,cfg", [
    ("markov", {}),
    ("gru4rec", {"epochs": 12, "lr": 0.03, "batch_size": 8}),
    ("sasrec", {"epochs": 12, "lr": 0.01, "dropout": 0.0, "heads": 1, "layers": 1}),
])
def test_models_learn_a_deterministic_successor(name, cfg):
    vocab, train, valid = _cycle_data()
    model, hist = train_model(name, train, valid, config={**FAST, **cfg, "patience": 12},
                              progress=False, seed=0, vocab=vocab)
    assert hist.best_valid["hr@10"] > 0.95
    assert hist.best_valid["ndcg@10"] > 0.8
    # the returned model is the best epoch's: re-validating gives the recorded figures
    again = validate(model, valid)
    assert again["ndcg@10"] == pytest.approx(hist.best_valid["ndcg@10"], abs=1e-4)


def test_early_stopping_keeps_the_best_epoch():
    vocab, train, valid = _cycle_data()
    # lr 0: nothing changes, so epoch 1 stays best and patience 2 stops after epoch 3
    model, hist = train_model("gru4rec", train, valid,
                              config={**FAST, "epochs": 10, "lr": 0.0, "patience": 2},
                              progress=False, seed=0, vocab=vocab)
    assert hist.stopped == "early_stopping"
    assert [e["epoch"] for e in hist.epochs] == [1, 2, 3]
    assert hist.best_epoch == 1
    assert hist.train_events == 3 * sum(len(s) - 1 for s in train)
    assert hist.events_per_s > 0
    d = hist.to_dict()
    assert d["best_epoch"] == 1 and json.dumps(d)


def test_time_limit_stops_training():
    vocab, train, valid = _cycle_data()
    _, hist = train_model("gru4rec", train, valid,
                          config={**FAST, "epochs": 50, "max_seconds": 1e-9},
                          progress=False, seed=0, vocab=vocab)
    assert hist.stopped == "time_limit" and len(hist.epochs) == 1


def test_training_without_validation_runs_every_epoch():
    vocab, train, _ = _cycle_data()
    _, hist = train_model("sasrec", train, None, config={**FAST, "epochs": 2},
                          progress=False, seed=0, vocab=vocab)
    assert [e["epoch"] for e in hist.epochs] == [1, 2] and hist.best_epoch == 2


def test_nothing_to_learn_is_a_clear_error():
    vocab = ItemVocab(["a", "b"])
    with pytest.raises(ValueError, match="two or more known events"):
        train_model("gru4rec", [np.array([1]), np.array([0, 2])], None, config=FAST,
                    progress=False, vocab=vocab)


def test_rows_cut_long_sequences_into_windows():
    data = SeqData(items=[np.arange(1, 24, dtype=np.int32)])
    rows = build_rows(data, max_len=10, windows=True)
    # 23 events -> 22 targets, all covered once: windows end at 23, 13 and 3
    assert sorted(int(t) for r in rows.targets for t in r) == list(range(2, 24))
    assert max(len(r) for r in rows.inputs) == 10
    last = build_rows(data, max_len=10, windows=False)
    assert [r.tolist() for r in last.targets] == [list(range(14, 24))]


def test_case_adapters():
    pairs = [(np.array([1, 2]), 3), (np.array([4]), 5)]
    c = as_cases(pairs)
    assert c.targets.tolist() == [3, 5] and c.histories.items[1].tolist() == [4]
    d = as_cases({"histories": [[1, 2], [4]], "targets": [3, 5]})
    assert d.targets.tolist() == [3, 5]


def test_case_adapter_reads_split_test_cases():
    from model_core.splits import make_split
    from schemas import Event

    events = [Event(f"e{i}", f"u{i % 3}", f"it{i % 7}", "view", 1_700_000_000_000 + i * 1000)
              for i in range(30)]
    split = make_split(events, "loo")
    cases = as_cases(split.valid)
    assert len(cases) == len(split.valid)
    assert cases.targets.tolist() == split.valid.target_item.tolist()


def test_item_category_table_from_events():
    from schemas import Event

    vocab = ItemVocab(["a", "b", "c"])
    ev = [Event("1", "u", "a", "view", 1_700_000_000_000, category_id="x"),
          Event("2", "u", "c", "view", 1_700_000_000_001, category_id="y"),
          Event("3", "u", "zz", "view", 1_700_000_000_002, category_id="y")]
    table, cats = item_category_table(ev, vocab)
    assert table.tolist() == [0, 1, 0, 2] and cats == ["x", "y"]


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def synth_log(tmp_path_factory):
    from model_core.datasets.synth import generate, write_jsonl

    path = tmp_path_factory.mktemp("log") / "synth.jsonl"
    write_jsonl(generate(3000, seed=1), path)
    return path


@pytest.mark.parametrize("model,protocol,extra", [
    ("gru4rec", "loo", ["--features", "action,category,gap"]),
    ("sasrec", "temporal", ["--loss", "gbce", "--negatives", "32", "--heads", "2"]),
    ("markov", "loo", []),
])
def test_train_command_writes_a_loadable_checkpoint(synth_log, tmp_path, model, protocol, extra,
                                                    capsys):
    from stream_app.cli import main

    out = tmp_path / "ckpt"
    rc = main(["train", "--data", str(synth_log), "--format", "jsonl", "--model", model,
               "--out", str(out), "--protocol", protocol, "--epochs", "2", "--dim", "16",
               "--max-len", "20", "--quiet", "--threads", "1", "--device", "cpu", *extra])
    assert rc == 0
    assert "saved" in capsys.readouterr().out
    m = load_model(out, device="cpu")
    assert m.name == model
    meta = read_meta(out)
    assert meta["split"]["protocol"] == protocol
    assert len(meta["data"]["sha256_16"]) == 16 and meta["data"]["events"] == 3000
    assert "ndcg@10" in meta["valid_metrics"]
    if protocol == "temporal":
        assert meta["split"]["refit"] is True and len(meta["training"]) == 2
    top = m.predict_topk(SequenceBatch(items=[np.array([1, 2, 3], np.int32)]), 5)
    assert (top.items > 0).all()


def test_train_command_loo_valid_users(synth_log, tmp_path, capsys):
    from stream_app.cli import main

    out = tmp_path / "ckpt"
    args = ["train", "--data", str(synth_log), "--format", "jsonl", "--model", "markov",
            "--out", str(out), "--protocol", "loo", "--quiet"]
    assert main(args) == 0
    classic = read_meta(out)["split"]["info"]
    assert main(args + ["--valid-users", "7", "--split-seed", "1"]) == 0
    info = read_meta(out)["split"]["info"]
    assert info["valid_users"] == 7
    assert info["valid_cases"] + info["valid_skipped_unknown_target"] == 7
    assert classic["valid_cases"] + classic["valid_skipped_unknown_target"] > 7
    capsys.readouterr()
    assert main(args + ["--protocol", "temporal", "--valid-users", "7"]) == 2
    assert "loo only" in capsys.readouterr().err


def test_train_command_reports_bad_input(tmp_path, capsys):
    from stream_app.cli import main

    rc = main(["train", "--data", str(tmp_path / "nope.jsonl"), "--format", "jsonl",
               "--model", "gru4rec", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err
    rc = main(["train", "--data", str(tmp_path / "nope.jsonl"), "--format", "jsonl",
               "--model", "bogus", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "unknown model" in capsys.readouterr().err


def test_warm_start_continues_from_a_checkpoint(tmp_path):
    from model_core.checkpoint import save_model
    from model_core.exceptions import CheckpointError

    vocab, train, valid = _cycle_data()
    a, _ = train_model("gru4rec", train, None, config={**FAST, "epochs": 2}, progress=False,
                       seed=0, vocab=vocab)
    save_model(a, tmp_path / "a")
    # lr 0: the continued model is exactly the checkpoint
    b, _ = train_model("gru4rec", train, None,
                       config={**FAST, "epochs": 1, "lr": 0.0, "init_from": str(tmp_path / "a")},
                       progress=False, seed=5, vocab=vocab)
    np.testing.assert_allclose(a.score(valid.histories), b.score(valid.histories), rtol=1e-6)
    with pytest.raises(CheckpointError, match="cannot start sasrec"):
        train_model("sasrec", train, None,
                    config={**FAST, "epochs": 1, "init_from": str(tmp_path / "a")},
                    progress=False, vocab=vocab)


def test_train_command_model_and_schedule_options(synth_log, tmp_path, capsys):
    from stream_app.cli import main

    base = ["train", "--data", str(synth_log), "--format", "jsonl", "--out", str(tmp_path / "s"),
            "--protocol", "loo", "--epochs", "2", "--dim", "16", "--max-len", "20", "--quiet",
            "--threads", "1", "--device", "cpu"]
    rc = main(base + ["--model", "sasrec", "--block", "sasrec", "--ffn-mult", "1",
                      "--activation", "relu", "--attn-dropout", "0.1", "--loss", "sampled",
                      "--negatives", "64", "--loss-dtype", "bfloat16", "--lr-schedule", "cosine",
                      "--warmup-epochs", "0.5", "--min-lr-ratio", "0.1"])
    assert rc == 0
    m = load_model(tmp_path / "s", device="cpu")
    assert (m.config["block"], m.config["ffn_mult"], m.config["act"]) == ("sasrec", 1, "relu")
    assert m.config["attn_dropout"] == 0.1 and m.config["loss_dtype"] == "bfloat16"
    run = read_meta(tmp_path / "s")["training"][0]
    assert run["config"]["lr_schedule"] == "cosine" and run["config"]["warmup_epochs"] == 0.5
    assert run["epochs"][-1]["lr"] == pytest.approx(1e-4, rel=0.01)  # --lr 1e-3 * 0.1
    rc = main(base[:6] + [str(tmp_path / "g")] + base[7:]
              + ["--model", "gru4rec", "--embed-dropout", "0.25", "--block", "sasrec"])
    assert rc == 0
    g = load_model(tmp_path / "g", device="cpu")
    assert g.config["embed_dropout"] == 0.25 and "block" not in g.config
    capsys.readouterr()
