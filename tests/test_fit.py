"""The one training path (model_core.fit) behind `train` and `evaluate --model NAME`: the
validation cases that choose the epoch are never trained on, the refit, the time budget
covering fit and refit, and a partial best epoch refitted as a partial epoch."""

from __future__ import annotations

import importlib
import json
import time

import numpy as np
import pytest

import model_core.train
from model_core.datasets.synth import generate, write_jsonl
from model_core.models.data import as_seqdata
from model_core.splits import make_split

TINY = {"dim": 8, "batch_size": 8, "max_len": 10, "threads": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def synth_events():
    return generate(3000, seed=2)


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory, synth_events):
    p = tmp_path_factory.mktemp("data") / "synth.jsonl"
    write_jsonl(synth_events, p)
    return p


class Spy:
    """Wraps train_model (in model_core.train and, where it exists, model_core.fit) and
    records, per call, the training events' count and newest time and the validation."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[dict] = []
        real = model_core.train.train_model

        def spy(name, train_sequences, valid_cases=None, config=None, **kw):
            data = as_seqdata(train_sequences)
            ts = [np.asarray(t) for t in (data.timestamps_ms or []) if len(t)]
            self.calls.append({
                "events": int(sum(len(s) for s in data.items)),
                "newest_ts": int(max(t.max() for t in ts)) if ts else None,
                "validated": valid_cases is not None, "config": dict(config or {})})
            model, hist = real(name, train_sequences, valid_cases, config=config, **kw)
            self.calls[-1]["history"] = hist
            return model, hist

        monkeypatch.setattr(model_core.train, "train_model", spy)
        try:
            fit_module = importlib.import_module("model_core.fit")
        except ImportError:  # before model_core.fit existed
            return
        monkeypatch.setattr(fit_module, "train_model", spy)


@pytest.mark.parametrize("model,config", [("markov", {}),
                                          ("gru4rec", {**TINY, "epochs": 2})])
@pytest.mark.parametrize("protocol", ["temporal", "session"])
def test_evaluate_never_trains_on_its_validation_cases_and_refits(
        synth_file, synth_events, monkeypatch, capsys, model, config, protocol):
    from stream_app.cli import main

    split = make_split(synth_events, protocol)
    spy = Spy(monkeypatch)
    assert main(["evaluate", "--data", str(synth_file), "--format", "jsonl", "--model", model,
                 "--protocol", protocol, "--config", json.dumps(config), "--bootstrap", "0",
                 "--json"]) == 0
    validated = [c for c in spy.calls if c["validated"]]
    assert len(validated) == 1
    # trained on the part before the validation cases, not on the whole train part
    assert validated[0]["events"] == len(split.fit_events) < len(split.train_events)
    if protocol == "temporal":
        assert validated[0]["newest_ts"] < split.info["valid_cut_ts"]
    # then refitted on every training event, as `seqstream train` does
    assert spy.calls[-1]["events"] == len(split.train_events)
    assert not spy.calls[-1]["validated"]


def test_train_and_evaluate_train_the_same_model(synth_file, tmp_path, capsys):
    """One path: `train` then evaluating the checkpoint gives the figures `evaluate --model`
    gives when it trains the same model itself."""
    from stream_app.cli import main

    common = ["--data", str(synth_file), "--format", "jsonl", "--protocol", "session"]
    ck = tmp_path / "ck"
    assert main(["train", "--model", "gru4rec", "--out", str(ck), "--dim", "8",
                 "--batch-size", "8", "--max-len", "10", "--epochs", "2", "--threads", "1",
                 "--device", "cpu", "--quiet", *common]) == 0
    capsys.readouterr()
    ev = ["evaluate", *common, "--json", "--bootstrap", "0"]
    assert main([*ev, "--model", str(ck)]) == 0
    loaded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = {**TINY, "epochs": 2, "max_len": 10}
    assert main([*ev, "--model", "gru4rec", "--config", json.dumps(cfg)]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["metrics"] == pytest.approx(loaded["metrics"])


# --------------------------------------------------------------------------- time budget
class FakeClock:
    """time.perf_counter that advances ``rate`` seconds per call: training time becomes a
    count of the loop's clock reads, the same on any machine."""

    def __init__(self, rate: float = 0.01) -> None:
        self.t, self.rate = 1000.0, rate

    def __call__(self) -> float:
        self.t += self.rate
        return self.t


def test_max_seconds_bounds_the_fit_and_the_refit(synth_file, tmp_path, monkeypatch):
    from model_core.checkpoint import read_meta
    from stream_app.cli import main

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    budget = 3.0
    start = clock.t
    assert main(["train", "--data", str(synth_file), "--format", "jsonl", "--model", "gru4rec",
                 "--protocol", "temporal", "--out", str(tmp_path / "ck"), "--dim", "8",
                 "--batch-size", "8", "--max-len", "10", "--epochs", "30", "--patience", "30",
                 "--threads", "1", "--device", "cpu", "--quiet",
                 "--max-seconds", str(budget)]) == 0
    meta = read_meta(tmp_path / "ck")
    fit_h, *refit_h = meta["training"]
    assert fit_h["stopped"] == "time_limit"
    assert refit_h, "the refit ran within the budget"
    # every clock read of the command counted: fit + validation + refit within the budget
    # (plus the last step and the reads around it)
    assert clock.t - start <= budget + 0.1
    assert sum(h["train_seconds"] for h in meta["training"]) <= budget


def test_a_partial_best_epoch_is_refitted_as_a_partial_epoch(synth_events, monkeypatch):
    from model_core.fit import FitConfig, fit

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    spy = Spy(monkeypatch)
    fit_module = importlib.import_module("model_core.fit")
    real_spy = fit_module.train_model

    def fit_timed_refit_untimed(*a, **kw):
        # the refit's clock stands still: only the cut taken from the fit can end its epoch
        clock.rate = 0.01 if not spy.calls else 0.0
        return real_spy(*a, **kw)

    monkeypatch.setattr(fit_module, "train_model", fit_timed_refit_untimed)
    split = make_split(synth_events, "temporal")
    res = fit(split, FitConfig("gru4rec", {**TINY, "epochs": 1, "max_seconds": 0.5}),
              log=lambda m: None)
    fit_epochs = spy.calls[0]["history"].epochs
    assert len(fit_epochs) == 1 and fit_epochs[0]["partial"]
    steps = fit_epochs[0]["steps"]
    assert res.refit and spy.calls[1]["config"]["final_epoch_steps"] == steps
    refit_epochs = spy.calls[1]["history"].epochs
    assert len(refit_epochs) == 1 and refit_epochs[0]["steps"] == steps
    assert refit_epochs[0]["partial"]


def test_final_epoch_steps_cuts_only_the_last_epoch():
    from model_core.train import train_model

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 30, size=8).astype(np.int32) for _ in range(200)]
    _, hist = train_model("gru4rec", seqs, None, config={**TINY, "epochs": 2,
                                                          "final_epoch_steps": 3,
                                                          "lr_schedule": "cosine"},
                          progress=False)
    first, last = hist.epochs
    assert not first["partial"] and first["steps"] > 3
    assert last["partial"] and last["steps"] == 3


def test_no_time_left_skips_the_refit_and_says_so(synth_events, monkeypatch):
    from model_core.fit import FitConfig, fit

    clock = FakeClock(rate=1.0)  # every clock read a second: the fit spends everything
    monkeypatch.setattr(time, "perf_counter", clock)
    split = make_split(synth_events, "temporal")
    res = fit(split, FitConfig("gru4rec", {**TINY, "epochs": 5, "max_seconds": 3}),
              log=lambda m: None)
    assert not res.refit and len(res.history) == 1
    assert "no time left" in res.refit_skipped


def test_the_refit_keeps_the_transition_weight_chosen_on_validation(synth_events,
                                                                   monkeypatch):
    from model_core.fit import FitConfig, fit

    spy = Spy(monkeypatch)
    split = make_split(synth_events, "temporal")
    lines: list[str] = []
    res = fit(split, FitConfig("sasrec", {**TINY, "epochs": 1, "transitions": True}),
              log=lines.append)
    chosen = res.history[0]["config"]["transition_weight"]
    said = [m for m in lines if m.startswith("defaults: transition term weight")]
    assert len(said) == 1 and f"weight {chosen:g}," in said[0]  # what compare prints
    assert "transition_weight" not in spy.calls[0]["config"]  # chosen on validation
    assert res.refit and spy.calls[-1]["config"]["transition_weight"] == chosen
    assert float(res.model.module.transitions.weight) == chosen
    # the refit counted its own (larger) training part
    assert res.model.module.transitions.n_pairs > 0
