"""Offline evaluation: each protocol on tiny logs with known answers, exclusion, sampled
negatives, bootstrap intervals, the prequential protocol and the CLI's JSON output.

The metric maths itself (ranks, HR/NDCG/MRR) is tested with the metrics module; here a model
with fixed scores makes every rank known in advance.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from model_core.datasets.synth import generate, write_jsonl
from model_core.evaluate import evaluate, evaluate_prequential, paired_comparison
from model_core.predictor import SequenceBatch, TopK
from model_core.splits import split_loo, split_session, split_temporal
from model_core.vocab import ItemVocab
from schemas import ACTIONS, Event, action_index

T0 = 1_700_000_000_000


class FixedModel:
    """Scores: ``base[item]`` plus ``bonus`` for the item ``follow[last history item]``."""

    name = "fixed"
    version = "fixed-1"

    def __init__(self, vocab: ItemVocab, base: dict[str, float], follow: dict[str, str] | None = None,
                 bonus: float = 100.0, action: str | None = None) -> None:
        self.vocab = vocab
        self.base = np.full(len(vocab), -1.0, dtype=np.float32)
        for item, s in base.items():
            self.base[vocab.index(item)] = s
        self.base[0] = -np.inf
        self.follow = {vocab.index(a): vocab.index(b) for a, b in (follow or {}).items()}
        self.bonus = bonus
        self.action = action
        self.calls = 0

    def score(self, batch: SequenceBatch) -> np.ndarray:
        self.calls += 1
        out = np.tile(self.base, (len(batch), 1))
        for b, h in enumerate(batch.items):
            h = np.asarray(h)[np.asarray(h) > 0]
            if len(h) and int(h[-1]) in self.follow:
                out[b, self.follow[int(h[-1])]] += self.bonus
        return out

    def predict_topk(self, batch: SequenceBatch, k: int, exclude_history: bool = False) -> TopK:
        sc = self.score(batch)
        if exclude_history:
            for b, h in enumerate(batch.items):
                sc[b, np.asarray(h)[np.asarray(h) > 0]] = -np.inf
        items = np.argsort(-sc[:, 1:], axis=1, kind="stable")[:, :k] + 1
        probs = None
        if self.action is not None:
            probs = np.zeros((len(batch), len(ACTIONS)), dtype=np.float32)
            probs[:, action_index(self.action)] = 1.0
        return TopK(items, np.take_along_axis(sc, items, 1), probs)

    def save(self, directory: str) -> None:  # pragma: no cover - not used
        pass


def ev(i: int, user: str, item: str, t_s: int, action: str = "view",
       session: str | None = None) -> Event:
    return Event(f"e{i}", user, item, action, T0 + t_s * 1000, session_id=session)


# --------------------------------------------------------------------------- loo
def _loo_log():
    # u: a b c | d(valid) a(test)    w: b c | a(valid) d(test)   -> train items a b c
    return [ev(1, "u", "a", 1), ev(2, "u", "b", 2), ev(3, "u", "c", 3), ev(4, "u", "d", 4),
            ev(5, "u", "a", 5, "cart"), ev(6, "w", "b", 1), ev(7, "w", "c", 2),
            ev(8, "w", "d", 3), ev(9, "w", "b", 4, "purchase"), ev(10, "v", "d", 1)]


def test_loo_ranks_known_in_advance():
    s = split_loo(_loo_log())
    vocab = ItemVocab(["a", "b", "c", "d"])
    m = FixedModel(vocab, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0})
    # test targets: u -> a (rank 1), w -> b (rank 2)
    r = evaluate(m, s.test, ks=(1, 2), n_boot=0)
    assert r.n_cases == 2 and r.n_skipped_unknown == 0
    assert r.ranks.tolist() == [1.0, 2.0]
    assert r.metrics["hr@1"] == 0.5 and r.metrics["hr@2"] == 1.0
    assert r.metrics["mrr@2"] == pytest.approx(0.75)
    assert r.metrics["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    # accuracy at each K, and exposure Gini (no training counts: no novelty / popularity)
    assert set(r.metrics) == {"hr@1", "ndcg@1", "mrr@1", "hr@2", "ndcg@2", "mrr@2", "gini@1",
                              "gini@2"}
    # exposure: item a twice at K=1 of 4 items -> Gini (2*4-4-1)*2 / (4*2) = 0.75
    assert r.metrics["gini@1"] == pytest.approx(0.75)
    # coverage: top-2 lists are {a, b} for both -> 2 of 4 items
    assert r.coverage == pytest.approx(0.5)


def test_unknown_targets_to_the_model_are_skipped_and_counted_when_asked():
    s = split_loo(_loo_log())
    m = FixedModel(ItemVocab(["b", "c", "d"]), {"b": 3.0, "c": 2.0, "d": 1.0})  # no "a"
    r = evaluate(m, s.test, ks=(1,), n_boot=0, unknown_targets="skip")
    assert r.n_skipped_unknown == 1 and r.n_cases == 1
    assert r.case_index.tolist() == [1]  # w's case
    assert r.ranks.tolist() == [1.0]


def test_conservative_ties_count_every_tied_item_above():
    s = split_loo(_loo_log())
    vocab = ItemVocab(["a", "b", "c", "d"])
    m = FixedModel(vocab, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})
    assert evaluate(m, s.test, n_boot=0).ranks.tolist() == [4.0, 4.0]
    assert evaluate(m, s.test, ties="optimistic", n_boot=0).ranks.tolist() == [1.0, 1.0]
    assert evaluate(m, s.test, ties="average", n_boot=0).ranks.tolist() == [2.5, 2.5]


def test_exclude_history_masks_every_history_item_and_counts_repeated_targets():
    log = _loo_log() + [ev(11, "x", "c", 1), ev(12, "x", "d", 2), ev(13, "x", "a", 3)]
    s = split_loo(log)
    vocab = ItemVocab(["a", "b", "c", "d"])
    m = FixedModel(vocab, {"c": 4.0, "d": 3.0, "b": 2.0, "a": 1.0})
    # u: history a b c d, target a; w: history b c d, target b: both targets are in their
    # history, so masking the history masks them too -> misses, counted
    # x: history c d, target a -> full rank 4; with c, d masked: b above a -> rank 2
    assert evaluate(m, s.test, n_boot=0).ranks.tolist() == [4.0, 3.0, 4.0]
    r = evaluate(m, s.test, exclude_history=True, n_boot=0, sampled=("uniform", 10))
    assert r.ranks.tolist() == [0.0, 0.0, 2.0]
    assert r.sampled["ranks"].tolist() == [0.0, 0.0, 2.0]
    assert r.n_cases == 3 and r.n_target_in_history == 2
    assert r.to_dict()["n_target_in_history"] == 2
    assert r.metrics["hr@10"] == pytest.approx(1 / 3)
    assert evaluate(m, s.test, n_boot=0).n_target_in_history == 0


# --------------------------------------------------------------------------- temporal / session
def test_temporal_protocol_on_a_tiny_log():
    log = [ev(1, "u", "a", 1), ev(2, "u", "b", 2), ev(3, "v", "a", 3), ev(4, "v", "b", 4),
           ev(5, "u", "c", 5), ev(6, "u", "a", 6), ev(7, "u", "c", 7), ev(8, "v", "c", 8),
           ev(9, "u", "b", 9), ev(10, "v", "a", 10)]
    s = split_temporal(log, quantile=0.8, valid_quantile=0.5)  # test: t=9 (u b), t=10 (v a)
    vocab = ItemVocab(["a", "b", "c"])
    # after c the model predicts b first; otherwise a > c > b
    m = FixedModel(vocab, {"a": 3.0, "c": 2.0, "b": 1.0}, follow={"c": "b"})
    r = evaluate(m, s.test, ks=(1, 3), n_boot=0)
    # u's history ends with c -> b first (rank 1); v's history ends with c -> b, a, c: a rank 2
    assert r.ranks.tolist() == [1.0, 2.0]
    assert r.metrics["hr@1"] == 0.5 and r.metrics["mrr@3"] == pytest.approx(0.75)


def test_session_protocol_next_clicks():
    train = [ev(1, "x", "a", 0, session="s1"), ev(2, "x", "b", 1, session="s1"),
             ev(3, "x", "c", 2, session="s1")]
    test = [ev(4, "y", "a", 100, session="t"), ev(5, "y", "b", 101, session="t"),
            ev(6, "y", "c", 102, session="t")]
    s = split_session(train, test_events=test)
    vocab = ItemVocab(["a", "b", "c"])
    m = FixedModel(vocab, {"c": 3.0, "a": 2.0, "b": 1.0}, follow={"a": "b"})
    r = evaluate(m, s.test, ks=(1,), n_boot=0)
    # history [a] -> b boosted: rank 1; history [a b] -> c: rank 1
    assert r.ranks.tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- sampled
def test_sampled_with_every_negative_equals_full_ranking():
    s = split_loo(_loo_log())
    vocab = ItemVocab(["a", "b", "c", "d"])
    m = FixedModel(vocab, {"c": 4.0, "d": 3.0, "b": 2.0, "a": 1.0})
    r = evaluate(m, s.test, sampled=("uniform", 100), n_boot=0)
    assert r.sampled["ranks"].tolist() == r.ranks.tolist() == [4.0, 3.0]
    assert r.sampled["metrics"]["hr@10"] == r.metrics["hr@10"]


def test_sampled_negatives_never_include_the_target_and_follow_popularity():
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(200)]
    vocab = ItemVocab(items)
    base = {it: float(k) for k, it in enumerate(items)}  # i199 best ... i0 worst
    m = FixedModel(vocab, base)
    log = []
    n = 0
    for u in range(40):
        for t, it in enumerate(rng.choice(items[:100], size=4, replace=False)):
            n += 1
            log.append(ev(n, f"u{u}", str(it), t))
    log += [ev(10_000 + k, "z", it, k) for k, it in enumerate(items)]  # every item in train
    s = split_loo(log)
    r = evaluate(m, s.test, sampled=("uniform", 10), n_boot=0)
    sr = r.sampled["ranks"]
    assert np.all(sr >= 1) and np.all(sr <= 11)
    assert np.all(sr <= r.ranks)
    # popularity sampling with counts only on the 5 worst-scored items: the target (scored
    # above them unless it is one of them) is always ranked 1
    counts = np.zeros(len(vocab))
    counts[vocab.indices(["i0", "i1", "i2", "i3", "i4"])] = 1.0
    rp = evaluate(m, s.test, sampled=("popularity", 3), item_counts=counts, n_boot=0)
    tgt = s.test.target_item
    worst = set(vocab.indices(["i0", "i1", "i2", "i3", "i4"]).tolist())
    expect = np.array([1.0 if t not in worst else np.nan for t in tgt])
    ok = ~np.isnan(expect)
    assert ok.sum() > 0 and np.all(rp.sampled["ranks"][ok] == 1.0)
    with pytest.raises(ValueError, match="sampling"):
        evaluate(m, s.test, sampled=("hard", 10))


# --------------------------------------------------------------------------- CIs / actions
def test_bootstrap_interval_on_a_known_distribution():
    # 400 cases, the model hits exactly every other one at rank 1 -> HR@1 = 0.5
    vocab = ItemVocab(["a", "b"])
    log = []
    for u in range(400):
        tgt = "a" if u % 2 == 0 else "b"
        log += [ev(4 * u, f"u{u}", "a", 1), ev(4 * u + 1, f"u{u}", "b", 2),
                ev(4 * u + 2, f"u{u}", "a", 3), ev(4 * u + 3, f"u{u}", tgt, 4)]
    s = split_loo(log)
    m = FixedModel(vocab, {"a": 2.0, "b": 1.0})
    r = evaluate(m, s.test, ks=(1,), n_boot=1000)
    assert r.metrics["hr@1"] == 0.5
    lo, hi = r.ci["hr@1"]
    se = math.sqrt(0.25 / 400)
    assert lo < 0.5 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert r.per_case["hr@1"].tolist() == [1.0, 0.0] * 200


def test_intervals_resample_whole_sessions():
    """40 test sessions of 11 clicks: the model hits every case of the even sessions and
    none of the odd ones. 400 cases but 40 independent units: the interval is that of 40."""
    train = [ev(1, "x", "a", 0, session="s0"), ev(2, "x", "b", 1, session="s0")]
    test, n = [], 10
    for k in range(40):
        for t in range(11):
            n += 1
            test.append(ev(n, f"u{k}", "a" if k % 2 == 0 else "b", 100 + 20 * k + t,
                           session=f"t{k}"))
    s = split_session(train, test_events=test)
    m = FixedModel(ItemVocab(["a", "b"]), {"a": 2.0, "b": 1.0})
    r = evaluate(m, s.test, ks=(1,), n_boot=1000)
    r_case = evaluate(m, s.test, ks=(1,), n_boot=1000, cluster=False)
    assert r.n_cases == 400 and r.metrics["hr@1"] == 0.5
    assert len(np.unique(r.clusters)) == 40 and r_case.clusters is None
    width = r.ci["hr@1"][1] - r.ci["hr@1"][0]
    width_case = r_case.ci["hr@1"][1] - r_case.ci["hr@1"][0]
    assert width == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 40), rel=0.25)
    assert width > 2.5 * width_case
    # the paired test resamples sessions too: "a always first" vs "b always first" differ by
    # +1 on the even sessions and -1 on the odd ones
    other = evaluate(FixedModel(ItemVocab(["a", "b"]), {"a": 1.0, "b": 2.0}), s.test, ks=(1,),
                     n_boot=0)
    cmp = paired_comparison(r, other, n_boot=1000)["hr@1"]
    cmp_case = paired_comparison(r_case, other, n_boot=1000)["hr@1"]
    assert cmp["mean_diff"] == 0.0
    assert cmp["ci_high"] - cmp["ci_low"] > 2.5 * (cmp_case["ci_high"] - cmp_case["ci_low"])


def test_next_action_metrics_and_majority_baseline():
    s = split_loo(_loo_log())  # test target actions: cart (u), purchase (w)
    vocab = ItemVocab(["a", "b", "c", "d"])
    r = evaluate(FixedModel(vocab, {"a": 1.0}, action="cart"), s.test, n_boot=0)
    assert r.action["accuracy"] == 0.5
    assert r.action["per_class"]["cart"]["precision"] == 0.5
    assert r.action["per_class"]["cart"]["recall"] == 1.0
    # majority of the histories' actions: view -> accuracy 0
    assert r.action_baseline["class"] == "view" and r.action_baseline["accuracy"] == 0.0
    r2 = evaluate(FixedModel(vocab, {"a": 1.0}), s.test, n_boot=0,
                  majority_action=action_index("purchase"))
    assert r2.action is None and r2.action_baseline["accuracy"] == 0.5


def test_paired_comparison_uses_common_cases():
    s = split_loo(_loo_log())
    vocab = ItemVocab(["a", "b", "c", "d"])
    good = evaluate(FixedModel(vocab, {"a": 4.0, "b": 3.0}), s.test, ks=(1,), n_boot=0)
    bad = evaluate(FixedModel(vocab, {"c": 4.0, "d": 3.0}), s.test, ks=(1,), n_boot=0)
    cmp = paired_comparison(good, bad, n_boot=200)
    assert cmp["hr@1"]["n"] == 2 and cmp["hr@1"]["mean_diff"] == 0.5
    assert cmp["hr@1"]["a"] == 0.5 and cmp["hr@1"]["b"] == 0.0


# --------------------------------------------------------------------------- prequential
def test_prequential_matches_successive_temporal_evaluation():
    """Same model, same log: the stream's engine and the offline temporal protocol agree."""
    events = generate(3000, n_users=30, n_items=60, seed=5)
    s = split_temporal(events, quantile=0.7)
    vocab = ItemVocab(sorted({e.item_id for e in events}))
    rng = np.random.default_rng(1)
    base = {it: float(v) for it, v in zip(sorted({e.item_id for e in events}),
                                            rng.permutation(len(vocab) - 1), strict=True)}
    follow = {it: sorted(base)[(k * 7 + 3) % len(base)] for k, it in enumerate(sorted(base))}
    m = FixedModel(vocab, base, follow=follow, bonus=1000.0)
    off = evaluate(m, s.test, ks=(5, 10), n_boot=0)
    cut = s.info["cut_ts"]
    pre = evaluate_prequential(m, [e for e in events if e.timestamp_ms >= cut],
                               warm_events=s.train_events, ks=(5, 10), max_len=10_000,
                               n_boot=0, batch_size=97)
    assert s.info["test_skipped_cold"] == 0 and s.info["test_skipped_unknown_target"] == 0
    assert pre.n_cases == off.n_cases
    for k in ("hr@5", "hr@10", "ndcg@10", "mrr@10"):
        assert pre.metrics[k] == pytest.approx(off.metrics[k])


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "synth.jsonl"
    write_jsonl(generate(3000, seed=2), p)
    return p


def test_unknown_targets_are_misses_by_default_every_case_counts():
    s = split_loo(_loo_log())
    m = FixedModel(ItemVocab(["b", "c", "d"]), {"b": 3.0, "c": 2.0, "d": 1.0})  # no "a"
    r = evaluate(m, s.test, ks=(1, 2), n_boot=0)
    # u's target a is unknown -> miss (rank 0); w's target b ranks 1
    assert r.n_cases == 2 and r.n_skipped_unknown == 0 and r.n_unknown_as_miss == 1
    assert r.case_index.tolist() == [0, 1]
    assert r.ranks.tolist() == [0.0, 1.0]
    assert r.metrics["hr@1"] == 0.5 and r.metrics["ndcg@2"] == 0.5
    d = r.to_dict()
    assert d["n_unknown_target_as_miss"] == 1 and d["n_test_cases"] == 2
    with pytest.raises(ValueError, match="unknown_targets"):
        evaluate(m, s.test, n_boot=0, unknown_targets="drop")


def test_unknown_targets_as_misses_keep_sampled_and_paired_alignment():
    s = split_loo(_loo_log())
    m = FixedModel(ItemVocab(["b", "c", "d"]), {"b": 3.0, "c": 2.0, "d": 1.0})
    r = evaluate(m, s.test, ks=(1,), n_boot=0, unknown_targets="miss", sampled=("uniform", 1))
    assert r.sampled["ranks"].tolist()[0] == 0.0 and r.sampled["metrics"]["hr@1"] <= 0.5
    full = FixedModel(ItemVocab(["a", "b", "c", "d"]), {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0})
    rf = evaluate(full, s.test, ks=(1,), n_boot=0, unknown_targets="skip")
    cmp = paired_comparison(rf, r, n_boot=50)
    assert cmp["hr@1"]["n"] == 2 and cmp["hr@1"]["a"] == 0.5 and cmp["hr@1"]["b"] == 0.5


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_cli_evaluate_json_shape(synth_file, capsys):
    from stream_app.cli import main

    rc = main(["evaluate", "--data", str(synth_file), "--format", "jsonl", "--model", "popular",
               "--protocol", "loo", "--ks", "5,10", "--sampled", "uniform:50", "--json",
               "--bootstrap", "50"])
    assert rc == 0
    d = _last_json(capsys)
    assert d["protocol"] == "loo" and d["model"] == "popular"
    assert d["n_test_cases"] > 0
    keys = {"hr@5", "ndcg@5", "mrr@5", "hr@10", "ndcg@10", "mrr@10"}
    # the synthetic log's items have categories: ild@K too
    beyond = {f"{m}@{k}" for m in ("novelty", "arp", "aplt", "gini", "ild") for k in (5, 10)}
    assert set(d["metrics"]) == keys | beyond and set(d["ci"]) == keys
    assert all(len(v) == 2 and v[0] <= d["metrics"][k] <= v[1] for k, v in d["ci"].items())
    # popular recommends the same head to everyone: all of it from the short head
    assert d["metrics"]["aplt@10"] == 0.0 and d["metrics"]["gini@10"] > 0.9
    assert set(d["extra"]["segments"]) >= {"k", "history", "action", "popularity"}
    assert d["extra"]["repeat"]["k"] == 10
    prov = d["provenance"]
    assert set(prov) == {"commit", "data_sha256", "split", "seed", "config"}
    assert list(prov["data_sha256"]) == [str(synth_file)] and prov["split"]["protocol"] == "loo"
    assert prov["config"]["model"] == "popular" and prov["config"]["sampled"] == "uniform:50"
    assert d["sampled"]["mode"] == "uniform" and d["sampled"]["n"] == 50
    assert d["sampled"]["metrics"]["hr@10"] >= d["metrics"]["hr@10"]
    # the corrected estimate lies nearer the full-ranking figure than the sampled one
    fixed = d["sampled"]["corrected"]["hr@10"]
    assert abs(fixed - d["metrics"]["hr@10"]) < abs(d["sampled"]["metrics"]["hr@10"]
                                                    - d["metrics"]["hr@10"])


@pytest.fixture(scope="module")
def unseen_file(tmp_path_factory):
    """The synthetic log plus, a day after its end, 10 users who click a known item and then
    an item nobody clicked before: in every protocol those are test cases whose target no
    model trained on the earlier events can rank."""
    events = generate(3000, seed=2)
    ts = sorted(e.timestamp_ms for e in events)
    end, between = ts[-1] + 86_400_000, ts[int(0.75 * len(ts))]
    known = events[0].item_id
    users = sorted({e.user_id for e in events})[:10]
    for k, u in enumerate(users):
        # first clicked between the validation and the test cut (temporal, quantile 0.8)
        events.append(Event(f"x{k}m", "mid-user", f"mid-{k}", "view", between + k))
        events.append(Event(f"x{k}a", u, known, "view", end + 10_000 * k))
        events.append(Event(f"x{k}b", u, f"mid-{k}", "view", end + 10_000 * k + 1000))
        events.append(Event(f"x{k}c", u, f"new-{k}", "view", end + 10_000 * k + 2000))
    events += [Event(f"y{k}", "mid-user", known, "view", between + 10 + k) for k in range(2)]
    p = tmp_path_factory.mktemp("data") / "unseen.jsonl"
    write_jsonl(events, p)
    return p


@pytest.mark.parametrize("protocol", ["loo", "temporal", "session", "prequential"])
def test_cli_every_protocol_counts_unknown_targets_as_misses(unseen_file, capsys, protocol):
    from stream_app.cli import main

    base = ["evaluate", "--data", str(unseen_file), "--format", "jsonl", "--model", "popular",
            "--protocol", protocol, "--json", "--bootstrap", "0"]
    assert main(base) == 0
    printed = capsys.readouterr().out
    miss = json.loads(printed.strip().splitlines()[-1])
    assert miss["n_unknown_target_as_miss"] == 10 and miss["n_skipped_unknown_target"] == 0
    assert "10 with a target unknown to the model: counted as misses" in " ".join(printed.split())
    assert main(base + ["--unknown-targets", "skip"]) == 0
    skip = _last_json(capsys)
    assert skip["n_skipped_unknown_target"] == 10 and skip["n_unknown_target_as_miss"] == 0
    assert miss["n_test_cases"] == skip["n_test_cases"] + 10
    # the same hits, averaged over more cases
    assert miss["metrics"]["hr@10"] * miss["n_test_cases"] == pytest.approx(
        skip["metrics"]["hr@10"] * skip["n_test_cases"])


def test_cli_no_refit_checkpoint_counts_the_cases_it_cannot_rank(unseen_file, tmp_path, capsys):
    """A model fitted on the part before the validation cases never saw the items first
    clicked between the validation and the test cut: their test cases are misses, not
    dropped."""
    from stream_app.cli import main

    ck = tmp_path / "ck"
    data = ["--data", str(unseen_file), "--format", "jsonl", "--protocol", "temporal"]
    assert main(["train", "--model", "popular", "--out", str(ck), "--no-refit", *data]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", "popular", *data, "--json", "--bootstrap", "0"]) == 0
    refit = _last_json(capsys)
    assert main(["evaluate", "--model", str(ck), *data, "--json", "--bootstrap", "0"]) == 0
    no_refit = _last_json(capsys)
    assert no_refit["n_test_cases"] == refit["n_test_cases"]
    assert no_refit["n_unknown_target_as_miss"] > refit["n_unknown_target_as_miss"] == 10


def test_cli_valid_users_is_loo_only(synth_file, capsys):
    from stream_app.cli import main

    base = ["evaluate", "--data", str(synth_file), "--format", "jsonl", "--model", "popular",
            "--protocol", "loo", "--json", "--bootstrap", "0"]
    assert main(base + ["--valid-users", "10"]) == 0
    vu = _last_json(capsys)
    assert vu["split"]["valid_users"] == 10 and vu["split"]["valid_cases"] <= 10
    assert main(base + ["--protocol", "temporal", "--valid-users", "10"]) == 2
    assert "applies to --protocol loo" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["temporal", "session", "prequential"])
def test_cli_protocols(synth_file, capsys, protocol):
    from stream_app.cli import main

    rc = main(["evaluate", "--data", str(synth_file), "--model", "markov", "--protocol",
               protocol, "--json", "--bootstrap", "20", "--exclude-history"])
    assert rc == 0
    d = _last_json(capsys)
    assert d["protocol"] == protocol and d["n_test_cases"] > 0
    assert 0.0 <= d["metrics"]["hr@10"] <= 1.0


def test_cli_compare_json(synth_file, capsys):
    from stream_app.cli import main

    rc = main(["compare", "popular", "markov", "--data", str(synth_file), "--protocol",
               "temporal", "--json", "--bootstrap", "50", "--ks", "10"])
    assert rc == 0
    d = _last_json(capsys)
    assert d["model_a"] == "popular" and d["model_b"] == "markov"
    p = d["paired"]["hr@10"]
    assert p["mean_diff"] == pytest.approx(p["a"] - p["b"])
    assert p["mean_diff"] < 0 and p["ci_high"] < 0  # markov is clearly better here
    assert p["effect_size"] < 0
    assert d["provenance"]["config"]["model_a"] == "popular"


def test_cli_compare_several_models_adjusts_p_values(synth_file, capsys):
    from stream_app.cli import main

    rc = main(["compare", "popular", "markov", "itemknn", "--data", str(synth_file),
               "--protocol", "temporal", "--json", "--bootstrap", "50", "--ks", "10"])
    assert rc == 0
    out = capsys.readouterr().out
    d = json.loads(out.strip().splitlines()[-1])
    assert d["models"] == ["popular", "markov", "itemknn"] and d["p_adjustment"] == "holm"
    ps = [c["paired"][m] for c in d["comparisons"] for m in c["paired"]]
    assert len(d["comparisons"]) == 2 and len(ps) == 2 * 4  # hr, ndcg, mrr @10, action_acc
    assert all(x["p_holm"] >= x["p_value"] for x in ps)
    # no resample crossed zero: printed as the bound, never as 0.000
    assert not re.search(r"│\s+0\.000\s+│", out) and "< 0.04" in out


def test_cli_errors_are_clear(synth_file, capsys):
    from stream_app.cli import main

    assert main(["evaluate", "--data", str(synth_file), "--model", "nosuch"]) == 2
    assert "neither a checkpoint directory nor a model name" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(synth_file), "--model", "popular",
                 "--sampled", "wrong"]) == 2


def test_cli_checkpoint_directory_gives_the_same_figures(synth_file, tmp_path, capsys):
    from stream_app.cli import main

    ck = tmp_path / "ck"
    common = ["--data", str(synth_file), "--protocol", "temporal", "--json", "--bootstrap", "20"]
    assert main(["evaluate", "--model", "markov", "--save", str(ck), *common]) == 0
    trained = _last_json(capsys)
    assert main(["evaluate", "--model", str(ck), *common]) == 0
    loaded = _last_json(capsys)
    assert loaded["metrics"] == trained["metrics"]
    assert loaded["n_test_cases"] == trained["n_test_cases"]


def test_a_long_model_label_gives_way_to_the_figures_at_80_columns():
    """compare's quality table with a checkpoint path as the label: at 80 columns rich cut
    HR 0.6764 to '0.67…'; now the label is cut and every figure is whole."""
    import io

    from rich.console import Console

    from stream_app.commands.evaluate import compact_table, show_table

    t = compact_table("quality @20", ["model", "HR", "NDCG", "coverage", "novelty",
                                      "long tail", "ILD"])
    t.add_row("/tmp/qs/ckpt (sasrec-06452ef49fcf)", "0.6764", "0.4861", "0.9741", "11.08",
              "0.415", "0.912")
    t.add_row("markov", "0.6620", "0.4770", "0.9181", "9.62", "0.210", "0.905")
    out = io.StringIO()
    show_table(Console(file=out, width=80), t)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for figure in ("0.6764", "0.4861", "0.9741", "11.08", "0.415", "0.912", "0.905"):
        assert figure in text, text
    assert "/tmp/qs/ckpt (sasrec-" in text and "…" in text
