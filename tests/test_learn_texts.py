"""The online learner with item texts (model_core.learn.texts): in a text or fused model a new
item whose metadata the learner has starts from its text vector; one without keeps the
schedule's start; a text that comes late is installed at the next update; a reused slot
forgets the text of the item that held it; an ID-only model refuses texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_text import FakeEncoder, _category_data, _model, _train_briefly

from model_core.exceptions import ModelCoreError
from model_core.learn import LearnSchedule, OnlineLearner
from model_core.learn.texts import ItemTexts
from model_core.models import create_model
from model_core.predictor import SequenceBatch
from model_core.vocab import ItemVocab
from schemas import Event

NEW_TEXT = "cat2 brand new item"


def _events(seqs, first_user: int = 0, t0: int = 0, prefix: str = "u") -> list[Event]:
    out, t = [], t0
    for u, seq in enumerate(seqs, first_user):
        for item in seq:
            out.append(Event(event_id=f"{prefix}{t}", user_id=f"{prefix}{u}", item_id=str(item),
                             action="click", timestamp_ms=1_700_000_000_000 + t * 1000))
            t += 1
    return out


def _stream(n_users: int = 12) -> list[Event]:
    """Category-2 users (items 11..15) who each view 'new-2' (has a text) and 'new-x' (none)."""
    rng = np.random.default_rng(5)
    seqs = [[*rng.integers(11, 16, 3), "new-2", *rng.integers(11, 16, 2), "new-x"]
            for _ in range(n_users)]
    return _events(seqs, t0=10_000, prefix="s")


def _learner(mode: str, texts: ItemTexts | None, every: int, **sched):
    enc = FakeEncoder()
    seqs, item_texts = _category_data(n_users=120)
    model = _model("gru4rec", mode, item_texts, enc)
    _train_briefly(model, seqs, steps=40)
    learner = OnlineLearner(model, LearnSchedule(every=every, **sched), texts=texts)
    learner.warm(_events(seqs))
    return model, learner


@pytest.mark.parametrize("mode", ["fused", "text"])
def test_a_new_item_with_a_text_starts_from_its_text_vector(mode):
    enc = FakeEncoder()
    texts = ItemTexts(enc)
    texts.add("new-2", NEW_TEXT)
    stream = _stream()
    model, learner = _learner(mode, texts, every=len(stream), lr=1e-6)  # steps ~ no move
    learner.learn(stream)
    emb = model.module.item_emb
    new, none = model.vocab.index("new-2"), model.vocab.index("new-x")
    assert new and none
    np.testing.assert_allclose(emb.text_vectors[new].numpy(), enc.encode([NEW_TEXT])[0],
                               rtol=1e-6)
    assert float(emb.text_vectors[none].abs().sum()) == 0.0  # no text: nothing installed
    assert texts.stats["started"] == 1 and texts.stats["encoded"] == 1
    if mode == "fused":  # its ID row: the mean of its 10 text-nearest trained items' rows
        rows = emb.id_emb.weight.detach()
        tv = torch.nn.functional.normalize(emb.text_vectors[1:21], dim=1)
        near = 1 + (tv @ tv.new_tensor(enc.encode([NEW_TEXT])[0])).topk(10).indices
        torch.testing.assert_close(rows[new], rows[near].mean(0), atol=1e-4, rtol=1e-3)
    # its vector is its text's: after a category-2 history it scores above every trained
    # item of another category
    sc = model.score(SequenceBatch(items=[np.asarray([11, 12, 13, 14], np.int64)]))[0]
    others = [i for i in range(1, 21) if not 11 <= i <= 15]
    assert sc[new] > sc[others].max()
    if mode == "text":  # no ID row: without a text an item has no vector at all
        assert float(emb.item_matrix().detach()[none].abs().sum()) == 0.0


def test_without_texts_the_new_item_has_no_text_vector():
    stream = _stream()
    model, learner = _learner("fused", None, every=len(stream))
    learner.learn(stream)
    new = model.vocab.index("new-2")
    assert float(model.module.item_emb.text_vectors[new].abs().sum()) == 0.0


def test_a_text_that_comes_late_is_installed_at_the_next_update():
    enc = FakeEncoder()
    texts = ItemTexts(enc)
    stream = _stream()
    half = len(stream) // 2
    model, learner = _learner("fused", texts, every=half)
    learner.learn(stream[:half])
    new = model.vocab.index("new-2")
    emb = model.module.item_emb
    assert new and float(emb.text_vectors[new].abs().sum()) == 0.0
    id_row = emb.id_emb.weight[new].detach().clone()
    assert float(id_row.abs().sum()) > 0  # started from its contexts
    texts.add("new-2", NEW_TEXT)
    learner.learn(stream[half:])
    np.testing.assert_allclose(emb.text_vectors[new].numpy(), enc.encode([NEW_TEXT])[0],
                               rtol=1e-6)
    assert texts.stats["refreshed"] == 1 and texts.stats["started"] == 0
    # the ID row learned on from where it was, it was not reset
    assert float(emb.id_emb.weight.detach()[new].abs().sum()) > 0


def test_a_reused_slot_forgets_the_text_of_the_item_before():
    enc = FakeEncoder()
    texts = ItemTexts(enc)
    texts.add("new-2", NEW_TEXT)
    stream = _stream(4)
    n_trained = 20
    # room for one item more than trained: 'new-x' takes the slot of the least recently
    # seen item, 'new-2''s once it is the oldest
    model, learner = _learner("fused", texts, every=1, max_items=n_trained + 1)
    learner.learn(stream)
    emb = model.module.item_emb
    assert emb.text_vectors.shape[0] == n_trained + 2
    for item_id, slot in ((i, model.vocab.index(i)) for i in ("new-2", "new-x")):
        if slot:
            want = enc.encode([NEW_TEXT])[0] if item_id == "new-2" else np.zeros(enc.dim)
            np.testing.assert_allclose(emb.text_vectors[slot].numpy(), want, atol=1e-6)


def test_an_id_model_or_another_encoder_width_is_refused():
    model = create_model("gru4rec", ItemVocab(["a", "b"]), device="cpu", dim=8, max_len=5)
    with pytest.raises(ModelCoreError, match="--text-mode text or fused"):
        OnlineLearner(model, LearnSchedule(every=10), texts=ItemTexts(FakeEncoder()))
    seqs, item_texts = _category_data(n_users=10)
    fused = _model("gru4rec", "fused", item_texts, FakeEncoder())

    class Wide(FakeEncoder):
        dim = 16

    with pytest.raises(ModelCoreError, match="16-d vectors"):
        OnlineLearner(fused, LearnSchedule(every=10), texts=ItemTexts(Wide()))


def test_item_texts_encode_each_text_once_and_only_when_asked():
    enc = FakeEncoder()
    texts = ItemTexts(enc)
    assert texts.add("a", "cat1 one") and not texts.add("a", "cat1 one")
    assert texts.add("a", "cat1 one, changed")
    texts.add_many([("b", "cat2 two"), ("c", "cat2 two")])
    assert enc.calls == []  # nothing encoded yet
    assert texts.take_changed() == ["a", "b", "c"] and texts.take_changed() == []
    got = texts.vectors(["b", "c", "zzz"])
    assert set(got) == {"b", "c"} and enc.calls == [1]  # one distinct text, one batch
    np.testing.assert_array_equal(got["b"], got["c"])
    assert torch.is_tensor(torch.as_tensor(got["b"]))


def test_compare_learning_with_texts_reports_the_items_started_from_text():
    from model_core.learn import compare_learning

    enc = FakeEncoder()
    seqs, item_texts = _category_data(n_users=120)
    model = _model("gru4rec", "fused", item_texts, enc)
    _train_briefly(model, seqs, steps=40)
    texts = ItemTexts(enc)
    texts.add("new-2", NEW_TEXT)
    stream = _stream()
    rep = compare_learning(model, stream, _events(seqs), LearnSchedule(every=len(stream) // 2),
                           n_boot=10, max_len=10, texts=texts)
    assert rep["learner"]["item_texts"]["started"] == 1
    assert rep["online"]["new_item_hits"] >= 0 and rep["frozen"]["new_item_hits"] == 0


def test_evaluate_items_option_reads_a_metadata_file(tmp_path):
    """``evaluate --items FILE``: the descriptions come from the file, each id once."""
    from model_core.text.encoder import text_extra_available
    from stream_app.cli import build_parser
    from stream_app.commands.evaluate import _item_texts

    if not text_extra_available():
        pytest.skip("the seqstream[text] extra (the default text encoder) is not installed")
    f = tmp_path / "items.csv"
    f.write_text("item_id,title,brand\nnew-2,red shoe,acme\nnew-3,blue hat,\n")
    args = build_parser().parse_args(["evaluate", "--data", "x.jsonl", "--model", "gru4rec",
                                      "--learn", "every=250", "--items", str(f),
                                      "--item-text-columns", "title"])
    texts = _item_texts(args)
    assert len(texts) == 2 and "new-3" in texts
    vec = texts.vectors(["new-2"])["new-2"]
    assert vec.shape == (texts.dim,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
