"""Text item encoder: metadata input, offline encoder, vector cache, fusion, stream item encoder."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model_core.text.cache import TextVectorCache, encode_items
from model_core.text.encoder import find_model_dir, text_extra_available
from model_core.text.exceptions import ItemMetadataError, TextCacheError, TextExtraMissing
from model_core.text.items import parse_item_record, read_item_metadata

ML100K_ITEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "recbole_ml-100k" / "ml-100k.item"


class FakeEncoder:
    """Deterministic stand-in: the category word sets the main direction, the rest jitters."""

    name = "fake"
    dim = 8

    def __init__(self, fingerprint: str = "fake-1") -> None:
        self.fingerprint = fingerprint
        self.calls: list[int] = []

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            out[i] = np.random.default_rng(seed).normal(0, 0.05, self.dim)
            word = t.split()[0].rstrip(";,") if t.split() else ""
            if word.startswith("cat") and word[3:].isdigit():
                out[i, int(word[3:]) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


# --------------------------------------------------------------------------- metadata input
def test_recbole_item_file_with_type_suffixes(tmp_path):
    p = tmp_path / "x.item"
    p.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tscore:float\n"
                 "1\tToy Story\t1995\tAnimation Comedy\t4.5\n"
                 "2\tGoldenEye\t1995\n"  # wrong field count
                 "3\t\t\t\t1.0\n"  # no text
                 "1\tDuplicate\t2000\tDrama\t1\n"
                 "4\tHeat \"1995\"\t1995\tAction\t3\n")
    m = read_item_metadata(p)  # default text: every token column, floats left out
    assert m.ids == ["1", "4"]
    assert m.texts == ["Toy Story; 1995; Animation Comedy", 'Heat "1995"; 1995; Action']
    assert m.bad == {"wrong field count": 1, "no text": 1, "duplicate id": 1}
    assert "line 3" in m.examples[0]
    m2 = read_item_metadata(p, "item_id:token", "movie_title,class:token_seq")
    assert m2.texts[0] == "Toy Story; Animation Comedy"


def test_csv_tsv_jsonl_and_errors(tmp_path):
    c = tmp_path / "items.csv"
    c.write_text('sku,title,brand\nA1,"Shoe, red",Acme\nA2,Hat\n,Nameless,X\n')
    m = read_item_metadata(c, "sku", ["title", "brand"])
    assert m.as_dict() == {"A1": "Shoe, red; Acme"}
    assert m.bad == {"wrong field count": 1, "missing id": 1}
    t = tmp_path / "items.tsv"
    t.write_text("sku\ttitle\nB1\tLamp\n")
    assert read_item_metadata(t, "sku").as_dict() == {"B1": "Lamp"}
    j = tmp_path / "items.jsonl"
    j.write_text('{"id": 7, "title": "Mug", "tags": ["kitchen", "blue"]}\nnot json\n[1]\n'
                 '{"title": "no id"}\n{"id": 8}\n')
    m = read_item_metadata(j, "id", "title,tags")
    assert m.as_dict() == {"7": "Mug; kitchen, blue"}
    assert m.bad == {"not a JSON object": 2, "missing id": 1, "no text": 1}
    assert "skipped 4" in m.report()
    with pytest.raises(ItemMetadataError, match="no column 'nope'"):
        read_item_metadata(c, "nope")
    with pytest.raises(ItemMetadataError, match="no such item metadata file"):
        read_item_metadata(tmp_path / "missing.csv")


def test_parse_item_record_bytes_and_dicts():
    assert parse_item_record(b'{"item_id": "9", "title": "Tea", "year": 1999.0}') == ("9", "Tea; 1999")
    assert parse_item_record({"item_id": "9"}) is None
    with pytest.raises(ValueError):
        parse_item_record(b"\xff not json")


@pytest.mark.data
def test_ml100k_items():
    if not ML100K_ITEM.is_file():
        pytest.skip("../shared/data/recbole_ml-100k is absent")
    m = read_item_metadata(ML100K_ITEM, "item_id", "movie_title,class,release_year")
    assert len(m) == 1682 and m.n_bad == 0
    assert m.texts[0] == "Toy Story; Animation Children's Comedy; 1995"


# --------------------------------------------------------------------------- encoder
def test_core_imports_without_the_text_extra():
    code = ("import sys, model_core.text.encoder, model_core.text.fusion, model_core.text.cache, "
            "model_core.text.item_encoder; bad = [m for m in ('tokenizers', 'transformers', "
            "'sentence_transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_missing_model_files_say_how_to_install(tmp_path):
    with pytest.raises(TextExtraMissing, match=r"seqstream\[text\]"):
        find_model_dir(tmp_path)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.skipif(not text_extra_available(),
                    reason="text extra not installed (pip install 'seqstream[text]')")
def test_minilm_loads_and_encodes_offline(no_network):
    from model_core.text.encoder import MiniLMEncoder

    enc = MiniLMEncoder(device="cpu")
    texts = ["Toy Story; Animation Children's Comedy; 1995", "wireless noise-cancelling headphones"]
    v = enc.encode(texts + [""], batch_size=2)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # reference: sentence-transformers' own all-MiniLM-L6-v2 pipeline on the same files
    ref = np.array([[-0.07347, 0.014412, 0.024463, -0.025082, 0.010838, 0.017914],
                    [-0.050259, 0.065804, 0.004434, 0.033721, -0.043038, -0.052977]])
    np.testing.assert_allclose(v[:2, :6], ref, atol=2e-5)
    # batching and order do not change a text's vector
    np.testing.assert_allclose(enc.encode(texts[::-1], batch_size=1)[::-1], v[:2], atol=1e-5)


# --------------------------------------------------------------------------- cache
def test_cache_reencodes_only_new_or_changed(tmp_path):
    enc = FakeEncoder()
    path = tmp_path / "ckpt" / "text_vectors.safetensors"
    r1 = encode_items(enc, ["cat1 a", "cat2 b", "cat1 a"], path)
    assert (r1.n_cached, r1.n_encoded, enc.calls) == (0, 3, [2])  # duplicate text encoded once
    np.testing.assert_array_equal(r1.vectors[0], r1.vectors[2])
    r2 = encode_items(enc, ["cat1 a", "cat2 b CHANGED", "cat3 c"], path)
    assert (r2.n_cached, r2.n_encoded, enc.calls[-1]) == (1, 2, 2)
    np.testing.assert_array_equal(r2.vectors[0], r1.vectors[0])
    r3 = encode_items(enc, ["cat1 a", "cat2 b CHANGED", "cat3 c"], path)
    assert (r3.n_cached, r3.n_encoded, len(enc.calls)) == (3, 0, 2)
    np.testing.assert_array_equal(r3.vectors, r2.vectors)
    other = FakeEncoder("fake-2")  # another model: nothing reusable
    r4 = encode_items(other, ["cat1 a"], path)
    assert (r4.n_cached, r4.n_encoded) == (0, 1)
    assert len(TextVectorCache(path, "fake-2", 8)) == 1  # rewritten for the new encoder
    path.write_bytes(b"garbage")
    with pytest.raises(TextCacheError, match="delete it"):
        encode_items(enc, ["cat1 a"], path)


# --------------------------------------------------------------------------- fusion
def _category_data(n_users=240, n_cat=4, per_cat=5, length=8, seed=0):
    """Users browse within one category: items 1..n_cat*per_cat, item i in category (i-1)//per_cat."""
    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(n_users):
        c = u % n_cat
        seqs.append((1 + c * per_cat + rng.integers(0, per_cat, length)).astype(np.int32))
    texts = {str(i): f"cat{(i - 1) // per_cat} item {i}" for i in range(1, n_cat * per_cat + 1)}
    return seqs, texts


def _train_briefly(model, seqs, steps=60):
    from model_core.models.data import Padded

    module = model.module
    module.train()
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    x = torch.as_tensor(np.stack([s[:-1] for s in seqs]), dtype=torch.long)
    y = torch.as_tensor(np.stack([s[1:] for s in seqs]), dtype=torch.long)
    lengths = torch.full((len(seqs),), x.shape[1], dtype=torch.long)
    for _ in range(steps):
        loss, _ = module.loss(Padded(x, lengths, None, None), y, None, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


@pytest.fixture(params=["sasrec", "gru4rec"])
def model_name(request):
    return request.param


def _model(name, mode, texts, enc):
    from model_core.models import create_model
    from model_core.text.fusion import set_text_table, text_table
    from model_core.vocab import ItemVocab

    vocab = ItemVocab(sorted(texts, key=int))
    model = create_model(name, vocab, device="cpu", seed=0, dim=16, item_mode=mode,
                         text_dim=enc.dim, max_len=10, loss="ce")
    table, has, _ = text_table(vocab, texts, enc)
    assert has[1:].all() and not has[0]
    set_text_table(model, table)
    return model


@pytest.mark.parametrize("mode", ["text", "fused"])
def test_unseen_item_gets_a_content_based_score(model_name, mode):
    from model_core.predictor import SequenceBatch
    from model_core.text.fusion import add_metadata_items

    enc = FakeEncoder()
    seqs, texts = _category_data(n_users=120)
    model = _model(model_name, mode, texts, enc)
    _train_briefly(model, seqs, steps=40)
    n_before = len(model.vocab)
    res = add_metadata_items(model, {"new-2": "cat2 brand new item", "3": texts["3"]}, enc)
    assert res.added == ["new-2"] and res.updated == ["3"] and res.first_index == n_before
    new = model.vocab.index("new-2")
    assert new == n_before and len(model.vocab) == n_before + 1
    hist = [s for s in _category_data(n_users=8, seed=1)[0]]  # users of categories 0..3
    sc = model.score(SequenceBatch(items=hist))
    assert sc.shape == (8, n_before + 1) and np.isfinite(sc[:, new]).all()
    ranks = (sc[:, 1:] > sc[:, [new]]).sum(1) + 1  # 1-based rank among all items
    cat2 = np.arange(8) % 4 == 2
    # category-2 users rank it with their category's items, above all others...
    assert ranks[cat2].max() <= 6, ranks
    # ...and it stands out from the catalogue for them far more than for other users
    row = sc[:, 1:]
    z = (sc[:, new] - row.mean(1)) / row.std(1)
    assert z[cat2].min() > z[~cat2].max() + 0.3, z
    top = model.predict_topk(SequenceBatch(items=[hist[2]]), k=6)
    assert new in top.items[0]


def test_id_mode_model_refuses_text_items():
    from model_core.models import create_model
    from model_core.text.fusion import TextFusionError, grow_items
    from model_core.vocab import ItemVocab

    model = create_model("sasrec", ItemVocab(["a", "b"]), device="cpu", dim=8, max_len=5)
    with pytest.raises(TextFusionError, match="text-mode"):
        grow_items(model, ["c"], np.zeros((1, 8), np.float32))


def test_fused_model_save_load_round_trip(model_name):
    from model_core.checkpoint import load_model, save_model
    from model_core.predictor import SequenceBatch
    from model_core.text.fusion import add_metadata_items

    enc = FakeEncoder()
    seqs, texts = _category_data(n_users=40)
    model = _model(model_name, "fused", texts, enc)
    _train_briefly(model, seqs, steps=5)
    add_metadata_items(model, {"n1": "cat1 new", "n2": "cat3 new"}, enc)
    batch = SequenceBatch(items=[seqs[0], seqs[1], np.array([model.vocab.index("n1")], np.int32)])
    before = model.score(batch)
    with tempfile.TemporaryDirectory() as d:
        save_model(model, d)
        loaded = load_model(d, device="cpu")
    assert loaded.vocab.item_ids(range(1, len(loaded.vocab))) == model.vocab.item_ids(range(1, len(model.vocab)))
    emb = loaded.module.item_emb
    assert emb.mode == "fused" and emb.text_vectors.shape == (len(model.vocab), enc.dim)
    torch.testing.assert_close(emb.text_vectors, model.module.item_emb.text_vectors)
    np.testing.assert_allclose(loaded.score(batch), before, rtol=1e-5, atol=1e-5)


def test_gru4rec_item_bias_grows_with_metadata_only_items():
    """GRU4Rec's output item bias (the rsc15 recipe's ``bias``) gets a slot (0) per item the
    metadata adds; before, scoring after the growth failed on the bias's old length."""
    from model_core.checkpoint import load_model, save_model
    from model_core.models import create_model
    from model_core.predictor import SequenceBatch
    from model_core.text.fusion import add_metadata_items, set_text_table, text_table
    from model_core.vocab import ItemVocab

    enc = FakeEncoder()
    seqs, texts = _category_data(n_users=40)
    vocab = ItemVocab(sorted(texts, key=int))
    model = create_model("gru4rec", vocab, device="cpu", seed=0, dim=16, item_mode="fused",
                         text_dim=enc.dim, max_len=10, loss="ce", bias=True)
    set_text_table(model, text_table(vocab, texts, enc)[0])
    model.module.set_item_counts(np.arange(len(vocab), dtype=np.float32))
    _train_briefly(model, seqs, steps=5)
    old_bias = model.module.out_bias.detach().clone()
    add_metadata_items(model, {"n1": "cat1 new", "n2": "cat3 new"}, enc)
    n = len(model.vocab)
    bias = model.module.out_bias
    assert isinstance(bias, torch.nn.Parameter) and bias.shape == (n,)
    torch.testing.assert_close(bias[: len(old_bias)].detach(), old_bias)
    assert (bias[len(old_bias):] == 0).all() and model.module.log_count.shape == (n,)
    batch = SequenceBatch(items=[seqs[0], np.array([model.vocab.index("n1")], np.int32)])
    sc = model.score(batch)
    assert sc.shape == (2, n) and np.isfinite(sc[:, 1:]).all()
    with tempfile.TemporaryDirectory() as d:
        save_model(model, d)
        np.testing.assert_allclose(load_model(d, device="cpu").score(batch), sc, rtol=1e-5,
                                   atol=1e-5)


# --------------------------------------------------------------------------- stream side
def test_stream_item_encoder_batches_and_reports_bad_records():
    from model_core.predictor import SequenceBatch
    from model_core.text.item_encoder import ItemEncoder

    enc = FakeEncoder()
    seqs, texts = _category_data(n_users=40)
    model = _model("sasrec", "text", texts, enc)
    ie = ItemEncoder(model, encoder=enc, id_field="item_id", text_fields="title,category")
    sub = ie.submit([b'{"item_id": "x1", "title": "cat1", "category": "shoes"}',
                     {"item_id": "x2", "title": "cat2 hat"}, b"{broken", {"title": "no id"},
                     {"item_id": "x1", "title": "cat1", "category": "boots"}])
    assert sub.accepted == 3 and len(sub.rejected) == 2 and ie.pending == 2
    assert enc.calls == [len(texts)]  # nothing encoded before flush
    res = ie.flush()
    assert res.added == ["x1", "x2"] and enc.calls[-1] == 2  # one batch for both
    assert model.module.item_emb.text_vectors.shape[0] == len(model.vocab)
    ie.submit([{"item_id": f"b{i}", "title": f"cat3 b{i}"} for i in range(5)])
    assert ie.flush(max_items=2).added == ["b0", "b1"] and ie.pending == 3
    assert ie.flush().added == ["b2", "b3", "b4"]
    again = ie.submit([{"item_id": "x2", "title": "cat2 hat"}])
    assert again.unchanged == 1 and ie.flush().added == []
    top = model.predict_topk(SequenceBatch(items=[seqs[1]]), k=len(model.vocab) - 1)
    assert model.vocab.index("x2") in top.items[0]
    assert ie.stats["added"] == 7 and ie.stats["rejected"] == 2
    # hot swap: a freshly loaded model gets the same items back, from the cache
    n_calls = len(enc.calls)
    swapped = _model("sasrec", "text", texts, enc)
    res = ie.rebind(swapped)
    assert sorted(res.added) == ["b0", "b1", "b2", "b3", "b4", "x1", "x2"]
    assert len(enc.calls) == n_calls + 1  # the new model's table only: rebind hit the cache
    torch.testing.assert_close(swapped.module.item_emb.text_vectors, model.module.item_emb.text_vectors)


@pytest.mark.skipif(not text_extra_available(),
                    reason="text extra not installed (pip install 'seqstream[text]')")
def test_train_cli_fused_with_metadata_only_items(tmp_path, no_network):
    from model_core.checkpoint import load_model, read_meta
    from model_core.datasets.synth import generate, write_jsonl
    from stream_app.cli import main

    events = generate(600, n_users=20, n_items=30, seed=3)
    write_jsonl(events, tmp_path / "log.jsonl")
    items = sorted({e.item_id for e in events}) + ["only-in-metadata"]
    (tmp_path / "items.csv").write_text(
        "sku,title,kind\n" + "".join(f"{i},Product {i},kind {len(i) % 3}\n" for i in items))
    out = tmp_path / "ckpt"
    rc = main(["train", "--data", str(tmp_path / "log.jsonl"), "--format", "jsonl",
               "--model", "gru4rec", "--protocol", "temporal", "--epochs", "1", "--dim", "16",
               "--items", str(tmp_path / "items.csv"), "--item-id-column", "sku",
               "--item-text-columns", "title,kind", "--text-mode", "fused", "--out", str(out),
               "--quiet", "--device", "cpu"])
    assert rc == 0
    model = load_model(out, device="cpu")
    assert "only-in-metadata" in model.vocab
    assert model.module.item_emb.mode == "fused"
    meta = read_meta(out)
    assert meta["hparams"]["recipe"] == "rsc15-small" and meta["hparams"]["values"]["bias"]
    assert model.module.out_bias.shape == (len(model.vocab),)
    text = meta["text"]
    assert text["metadata_only_items_added"] >= 1 and text["encoder"] == "all-MiniLM-L6-v2"
    assert (out / "text_vectors.safetensors").is_file()


def test_knn_id_init_borrows_id_vectors_of_text_neighbours():
    from model_core.text.fusion import add_metadata_items

    enc = FakeEncoder()
    seqs, texts = _category_data(n_users=40)
    model = _model("sasrec", "fused", texts, enc)
    _train_briefly(model, seqs, steps=3)
    emb = model.module.item_emb
    res = add_metadata_items(model, {"z": "cat1 look-alike"}, enc, id_init="knn")
    new = res.first_index
    tv = torch.nn.functional.normalize(emb.text_vectors, dim=1)
    sims = tv[1:new] @ tv[new]
    nearest = sims.topk(5).indices + 1  # k=10 over 20 items; the 5 closest are category 1
    assert set(nearest.tolist()) == {6, 7, 8, 9, 10}
    expect = emb.id_emb.weight[(tv[1:new] @ tv[new]).topk(10).indices + 1].mean(0)
    torch.testing.assert_close(emb.id_emb.weight[new], expect)
    zero = add_metadata_items(model, {"y": "cat1 other"}, enc)  # default: text only
    assert float(emb.id_emb.weight[zero.first_index].detach().abs().sum()) == 0.0
