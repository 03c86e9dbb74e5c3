"""seqstream tune on a tiny log: trials on the validation part, the best checkpoint saved,
a resumed study, pruning (model_core.tune)."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")

from model_core.checkpoint import load_model, read_meta  # noqa: E402
from model_core.tune import search_space, trial_lines  # noqa: E402


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    from model_core.datasets.synth import generate, write_jsonl

    path = tmp_path_factory.mktemp("log") / "tiny.jsonl"
    write_jsonl(generate(1500, seed=4), path)
    return path


def _tune(log, out, *extra):
    from stream_app.cli import main

    return main(["tune", "--data", str(log), "--format", "jsonl", "--protocol", "session",
                 "--out", str(out), "--minutes", "5", *extra])


def test_tune_saves_the_best_checkpoint_and_resumes_its_study(tiny_log, tmp_path, capsys):
    out = tmp_path / "t"
    assert _tune(tiny_log, out, "--model", "vstan", "--trials", "2", "--k", "50") == 0
    printed = capsys.readouterr().out
    assert "2 trials (2 new)" in printed and "test (" in printed
    assert all(len(line) <= 80 for line in printed.splitlines()
               if not line.startswith("saved")), printed  # a path is as long as it is
    meta = read_meta(out / "best")
    assert meta["tune"]["trials"] == 2
    assert "k" not in meta["tune"]["searched"]  # given: fixed, not searched
    assert meta["hparams"]["values"]["k"] == 50
    first = meta["hparams"]["values"]
    m = load_model(out / "best")
    assert m.name == "vstan"
    for k in meta["tune"]["searched"]:
        assert m.config[k] == first[k]
    assert (out / "study.sqlite3").exists()
    # the same command again continues the study
    assert _tune(tiny_log, out, "--model", "vstan", "--trials", "1", "--k", "50") == 0
    assert "3 trials (1 new)" in capsys.readouterr().out
    assert read_meta(out / "best")["tune"]["trials"] == 3


def test_the_first_trial_is_the_default_configuration(tiny_log, tmp_path, capsys):
    from model_core.hparams import hparams_of

    out = tmp_path / "s"
    assert _tune(tiny_log, out, "--model", "stan", "--trials", "2") == 0
    import optuna

    study = optuna.load_study(study_name="seqstream-stan",
                              storage=f"sqlite:///{out / 'study.sqlite3'}")
    t0 = study.trials[0]
    assert t0.user_attrs.get("defaults") is True
    declared = {h.name: h.default for h in hparams_of("stan")}
    assert t0.params == {k: declared[k] for k in t0.params}
    meta = read_meta(out / "best")
    assert meta["tune"]["best_valid_ndcg@10"] >= meta["tune"]["defaults_valid_ndcg@10"]


def test_weak_neural_trials_are_pruned_on_their_epochs(tiny_log, tmp_path, capsys):
    out = tmp_path / "g"
    assert _tune(tiny_log, out, "--model", "gru4rec", "--trials", "3", "--epochs", "3",
                 "--dim", "8", "--threads", "1", "--device", "cpu") == 0
    import optuna

    study = optuna.load_study(study_name="seqstream-gru4rec",
                              storage=f"sqlite:///{out / 'study.sqlite3'}")
    assert len(study.trials) == 3
    for t in study.trials:  # every trial reported its validation metric per epoch
        assert t.intermediate_values and max(t.intermediate_values) <= 3
    assert read_meta(out / "best")["hparams"]["values"]["dim"] == 8
    assert "dim" not in [h.name for h in search_space("gru4rec", {"dim": 8})]


def test_the_trial_table_fits_80_columns():
    rows = [{"number": 123, "state": "complete", "value": 0.123456, "seconds": 6000.0,
             "params": {"lr": 0.0123456789, "dropout": 0.33333, "negatives": 12345,
                        "sample_alpha": 0.987654, "momentum": 0.1234, "dim": 128}},
            {"number": 4, "state": "pruned", "value": None, "seconds": 1.0, "params": {}}]
    lines = trial_lines(rows, ["lr", "dropout", "negatives", "sample_alpha", "momentum", "dim"])
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines)
    assert "lr=0.0123" in lines[1] and lines[2].split()[2] == "-"
