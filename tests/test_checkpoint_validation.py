"""The checkpoint loader refuses damaged or hostile checkpoints before allocating (issue 12,
item 11): config values are checked against the weights' header and limits, and NaN or
infinite weights, negative counts and an item table outside the vocabulary are refused, each
with a CheckpointError naming the file and the field or tensor."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from model_core.checkpoint import load_model, save_model
from model_core.exceptions import CheckpointError
from model_core.models import create_model
from model_core.models.data import as_seqdata
from model_core.vocab import ItemVocab
from schemas import SeqstreamError

VOCAB = ItemVocab(f"i{k}" for k in range(1, 31))


def _gru(tmp_path):
    d = tmp_path / "gru"
    save_model(create_model("gru4rec", VOCAB, dim=16, max_len=10), d)
    return d


def _markov(tmp_path):
    d = tmp_path / "markov"
    m = create_model("markov", VOCAB)
    m.fit(as_seqdata({"items": [np.arange(1, 31, dtype=np.int32), np.array([3, 4, 5, 3, 4])]}))
    save_model(m, d)
    return d


def _set_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg["config"].update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def test_valid_checkpoints_still_load(tmp_path):
    assert load_model(_gru(tmp_path), device="cpu").name == "gru4rec"
    assert load_model(_markov(tmp_path), device="cpu").name == "markov"


def test_config_larger_than_its_weights_is_refused_before_allocating(tmp_path):
    d = _gru(tmp_path)
    _set_config(d, hidden=4096)  # would be GRU weights of 12288 x 4096 (and more): ~270 MB
    before = _max_rss_mb()
    with pytest.raises(CheckpointError, match=r"weights\.safetensors does not match config"
                                              r"\.json: tensor 'rnn\.weight_ih_l0' has shape \[48, 16\]"):
        load_model(d, device="cpu")
    assert _max_rss_mb() - before < 100  # nothing of that size was allocated


def test_config_value_above_its_limit_is_a_clear_error(tmp_path):
    d = _gru(tmp_path)
    _set_config(d, hidden=10**7)
    with pytest.raises(CheckpointError, match=r"config\.json: config\.hidden = 10000000 is "
                                              r"above the limit"):
        load_model(d, device="cpu")
    _set_config(d, hidden=16, dim=-4)
    with pytest.raises(CheckpointError, match=r"config\.dim = -4 must be a finite"):
        load_model(d, device="cpu")


def test_nan_weights_are_refused(tmp_path):
    d = _gru(tmp_path)
    arrays = load_torch(str(d / "weights.safetensors"))
    arrays["rnn.weight_hh_l0"][0, 0] = float("nan")
    save_torch(arrays, str(d / "weights.safetensors"))
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: tensor "
                                              r"'rnn\.weight_hh_l0' holds NaN"):
        load_model(d, device="cpu")


def _rewrite_counts(d, **changes):
    from safetensors.numpy import load_file

    arrays = dict(load_file(str(d / "weights.safetensors")))
    for key, fn in changes.items():
        arrays[key] = fn(arrays[key].copy())
    save_numpy(arrays, str(d / "weights.safetensors"))


@pytest.mark.parametrize("value, reason", [(np.nan, "NaN or infinite"),
                                           (np.inf, "NaN or infinite"),
                                           (-3.0, "negative counts")])
def test_bad_counts_are_refused(tmp_path, value, reason):
    d = _markov(tmp_path)

    def poison(a):
        a[3] = value
        return a

    _rewrite_counts(d, item_counts=poison)
    with pytest.raises(CheckpointError, match=rf"tensor 'item_counts' holds {reason}"):
        load_model(d, device="cpu")


def test_item_table_outside_the_vocabulary_is_refused(tmp_path):
    d = _markov(tmp_path)

    def shift(a):
        a[0] = 10_000
        return a

    _rewrite_counts(d, indices=shift)
    with pytest.raises(CheckpointError, match="'indices' holds items outside the vocabulary"):
        load_model(d, device="cpu")


def test_header_claiming_bytes_beyond_the_file_is_refused(tmp_path):
    d = _markov(tmp_path)
    raw = (d / "weights.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["data"]["shape"] = [10**9]
    header["data"]["data_offsets"] = [0, 4 * 10**9]
    head = json.dumps(header).encode()
    (d / "weights.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n:])
    with pytest.raises(CheckpointError, match="tensor 'data' is invalid or lies outside the file"):
        load_model(d, device="cpu")
    (d / "weights.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(SeqstreamError, match="not a safetensors file"):
        load_model(d, device="cpu")


def test_neural_checkpoint_keeps_its_training_counts_and_older_ones_load_without(tmp_path):
    """GRU4Rec / SASRec checkpoints store the training item counts (the beyond-accuracy
    figures need them); one saved before (no such tensor) loads with none; bad counts are
    refused like a counting model's."""
    import torch

    from model_core.train import train_model

    seqs = as_seqdata({"items": [np.arange(1, 31, dtype=np.int32),
                                 np.array([3, 4, 5, 3, 4], dtype=np.int32)]})
    model, _ = train_model("gru4rec", seqs, config={"epochs": 1, "dim": 8, "max_len": 10},
                           progress=False, vocab=VOCAB)
    want = np.bincount(np.r_[np.arange(1, 31), [3, 4, 5, 3, 4]], minlength=31).astype(float)
    assert model.item_counts.tolist() == want.tolist()
    d = save_model(model, tmp_path / "gru")
    back = load_model(d, device="cpu")
    assert back.item_counts.tolist() == want.tolist()
    weights = d / "weights.safetensors"
    tensors = load_torch(str(weights))
    save_torch({k: v for k, v in tensors.items() if k != "item_counts"}, str(weights))
    old = load_model(d, device="cpu")  # saved before the counts were stored
    assert old.item_counts is None
    for bad, reason in ((torch.full((31,), -1.0), "negative counts"),
                        (torch.ones(7), "shape")):
        save_torch({**tensors, "item_counts": bad}, str(weights))
        with pytest.raises(CheckpointError, match=reason):
            load_model(d, device="cpu")
