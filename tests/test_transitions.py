"""SASRec's counted last-item transition term (model_core.models.transitions), by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from model_core.models.transitions import WEIGHTS, TransitionTerm, transition_counts

# pairs: (1,2) x2, (2,3) x2, (3,1) x1; a 0 (unknown) breaks the pair (3,0),(0,2)
SEQS = [np.array([1, 2, 3]), np.array([1, 2]), np.array([2, 3, 1]), np.array([3, 0, 2])]
L2, L3 = math.log(2.0), math.log(3.0)  # log(1 + 1), log(1 + 2)


def _term(weight: float = 1.0) -> TransitionTerm:
    t = TransitionTerm(4, weight)
    t.fit(SEQS, n_items=4)
    return t


def test_counts_are_the_consecutive_known_pairs():
    indptr, indices, counts = transition_counts(SEQS, 5)
    assert indptr.tolist() == [0, 0, 1, 2, 3, 3]
    assert indices.tolist() == [2, 3, 1] and counts.tolist() == [2, 2, 1]


def test_rows_and_at_give_log1p_counts():
    t = _term()
    got = t.rows(torch.tensor([1, 2, 3, 4, 0, 9]), 5)  # 4: no successor; 0, 9: no row
    want = torch.zeros(6, 5)
    want[0, 2], want[1, 3], want[2, 1] = L3, L3, L2
    torch.testing.assert_close(got, want)
    at = t.at(torch.tensor([1, 3, 9]), torch.tensor([[2, 1, 4], [1, 2, 3], [2, 2, 2]]))
    torch.testing.assert_close(at, torch.tensor([[L3, 0, 0], [L2, 0, 0], [0.0, 0, 0]]))
    shared = t.at(torch.tensor([1, 2]), torch.tensor([3, 2]))  # [C] shared by every row
    torch.testing.assert_close(shared, torch.tensor([[0.0, L3], [L3, 0.0]]))


def test_sasrec_scores_with_the_term():
    from model_core.models import create_model
    from model_core.models.base import last_items
    from model_core.models.data import pad_batch
    from model_core.vocab import ItemVocab

    vocab = ItemVocab(["a", "b", "c", "d"])
    model = create_model("sasrec", vocab, dim=8, transitions=True)
    m = model.module
    m.transitions.fit(SEQS, vocab.n_items)
    p = pad_batch([np.array([2, 1]), np.array([3])], None, None, 50)
    assert last_items(p).tolist() == [1, 3]
    h = m(p.items, p.lengths)
    base = m.score_all(h)
    torch.testing.assert_close(m.score_next(h, last_items(p)), base)  # weight 0: the network
    m.transitions.weight.fill_(0.7)
    want = base.clone()
    want[0, 2] += 0.7 * L3  # after item 1: item 2 followed it twice
    want[1, 1] += 0.7 * L2  # after item 3: item 1 once
    torch.testing.assert_close(m.score_next(h, last_items(p)), want)
    # what predictions, scores and the rank path give
    from model_core.predictor import SequenceBatch
    from model_core.serving import UserSequence, candidate_scores

    batch = SequenceBatch([np.array([2, 1]), np.array([3])])
    full = model.score(batch)
    np.testing.assert_allclose(full[:, 1:], want[:, 1:].detach().numpy(), rtol=1e-5)
    assert model.predict_topk(batch, 1).items[:, 0].tolist() == (
        want[:, 1:].argmax(1) + 1).tolist()
    rows = [UserSequence(np.array(r, np.int32), np.zeros(len(r), np.uint8),
                         np.arange(len(r), dtype=np.int64)) for r in ([2, 1], [3])]
    got = candidate_scores(model, rows, [np.array([2, 3]), np.array([1, 4])])
    np.testing.assert_allclose(got[0], full[0, [2, 3]], rtol=1e-5)
    np.testing.assert_allclose(got[1], full[1, [1, 4]], rtol=1e-5)


def test_training_counts_the_table_and_chooses_the_weight_on_validation():
    from model_core.datasets.synth import generate
    from model_core.sequences import build_vocab, group_by_user
    from model_core.train import as_cases, choose_transition_weight, train_model

    events = generate(600, seed=5)
    vocab = build_vocab(events)
    seqs = group_by_user(events, vocab)
    train = [s[:-1] for s in seqs.items]
    cases = {"histories": [s[:-1] for s in seqs.items if len(s) > 2],
             "targets": [int(s[-1]) for s in seqs.items if len(s) > 2]}
    model, hist = train_model("sasrec", train, cases, vocab=vocab, progress=False,
                              config={"dim": 8, "epochs": 1, "transitions": True,
                                      "valid_exclude_history": False})
    t = model.module.transitions
    want = transition_counts(train, vocab.n_items + 1)
    assert t.n_pairs == len(want[1]) > 0
    w = hist.config["transition_weight"]
    assert w in WEIGHTS and float(t.weight) == w
    got, scan = choose_transition_weight(model, as_cases(cases), False)
    assert got == w and set(scan) == set(WEIGHTS)
    assert hist.best_valid["ndcg@10"] == round(scan[w]["ndcg@10"], 5)
    assert scan[w]["ndcg@10"] == max(r["ndcg@10"] for r in scan.values())


def test_the_table_survives_a_checkpoint(tmp_path):
    from model_core.checkpoint import load_model, save_model
    from model_core.models import create_model
    from model_core.vocab import ItemVocab

    vocab = ItemVocab(["a", "b", "c", "d"])
    model = create_model("sasrec", vocab, dim=8, transitions=True)
    model.module.transitions.fit(SEQS, vocab.n_items)
    model.module.transitions.weight.fill_(4.0)
    save_model(model, tmp_path / "ck")
    back = load_model(tmp_path / "ck", device="cpu")
    assert back.config["transitions"] is True
    t = back.module.transitions
    assert t.n_pairs == 3 and float(t.weight) == 4.0
    # an item added online (model_core.learn grows the embeddings, not the table): the saved
    # table is shorter than the vocabulary, and loads as it is
    from model_core.learn.items import grow_neural

    back.vocab.add("e")
    grow_neural(back.module, len(back.vocab), [5], [], "mean", np.random.default_rng(0))
    save_model(back, tmp_path / "grown")
    again = load_model(tmp_path / "grown", device="cpu")
    assert again.vocab.n_items == 5 and again.module.transitions.indptr.numel() == 6
    torch.testing.assert_close(again.module.transitions.rows(torch.tensor([1, 5]), 6),
                               torch.tensor([[0, 0, L3, 0, 0, 0], [0.0] * 6]))
    torch.testing.assert_close(t.rows(torch.tensor([1]), 5), torch.tensor([[0, 0, L3, 0, 0]]))




def test_a_reused_slot_forgets_its_pairs():
    t = _term()
    t.forget([2])  # (1,2) x2 and (2,3) x2 go; (3,1) stays
    assert t.indptr.tolist() == [0, 0, 0, 0, 1, 1] and t.indices.tolist() == [1]
    torch.testing.assert_close(t.rows(torch.tensor([1, 2, 3]), 5),
                               torch.tensor([[0.0] * 5, [0.0] * 5, [0, L2, 0, 0, 0]]))
