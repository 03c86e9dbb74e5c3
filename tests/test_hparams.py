"""Hyper-parameter declarations (model_core.hparams), the data-shape defaults
(model_core.defaults) and how train / evaluate build their model flags from them."""

from __future__ import annotations

import json

import pytest

from model_core.checkpoint import load_model, read_meta
from model_core.defaults import (
    FEW_STEPS_LOG,
    LARGE_CATALOGUE,
    OPTIMISER_GROUP,
    DataShape,
    choose,
    default_valid_users,
)
from model_core.hparams import MODEL_HPARAMS, NEURAL, TRAIN_HPARAMS, HParam, hparams_of
from model_core.models import MODELS, NEURAL_MODELS
from model_core.train import LINE_WIDTH, epoch_line


@pytest.fixture(scope="module")
def synth_log(tmp_path_factory):
    from model_core.datasets.synth import generate, write_jsonl

    path = tmp_path_factory.mktemp("log") / "synth.jsonl"
    write_jsonl(generate(2000, seed=3), path)
    return path


# --------------------------------------------------------------------------- declarations
def test_every_model_declares_its_hyper_parameters_once():
    assert set(MODELS) == set(MODEL_HPARAMS)
    assert set(NEURAL) == set(NEURAL_MODELS)
    for name, cls in MODELS.items():
        assert cls.hparams == MODEL_HPARAMS[name], name
        names = [h.name for h in hparams_of(name)]
        assert len(names) == len(set(names)), f"{name} declares a name twice"
        for h in hparams_of(name):
            assert h.help and h.kind in (int, float, str, bool, list)
            assert h.check(h.default) == h.default
            if h.search is not None:
                assert len(h.search) >= 2


def test_names_shared_by_models_have_one_type():
    from model_core.hparams import all_hparams

    for name, decls in all_hparams().items():
        assert len({d.kind for _, d in decls}) == 1, name
        assert len({d.cli_flag for _, d in decls}) == 1, name


@pytest.mark.parametrize("h,value,ok", [
    (HParam("x", int, 1, "h", low=1), "3", 3),
    (HParam("x", int, 1, "h", low=1), 0, None),
    (HParam("x", float, 0.1, "h", low=0, high=1), 1.5, None),
    (HParam("x", str, "a", "h", choices=("a", "b")), "b", "b"),
    (HParam("x", str, "a", "h", choices=("a", "b")), "c", None),
    (HParam("x", list, [], "h", choices=("p", "q")), "p,q", ["p", "q"]),
    (HParam("x", bool, False, "h"), "yes", None),
])
def test_a_declaration_checks_values(h, value, ok):
    if ok is None:
        with pytest.raises(ValueError, match="x"):
            h.check(value)
    else:
        assert h.check(value) == ok


def _alt(h: HParam):
    """A valid value other than the default (small where it costs training time)."""
    small = {"epochs": 2, "patience": 1, "max_len": 10, "dim": 16, "negatives": 32,
             "batch_size": 16, "hidden": 24, "layers": 2, "heads": 2, "ffn_mult": 2,
             "loss": "sampled", "sparse_emb": True, "in_batch": False, "logq": False,
             "features": ["action"], "action_head": True, "batch_order": "time",
             "sample_size": 77, "k": 9}
    if h.name in small:
        return small[h.name]
    if h.kind is bool:
        return not h.default
    if h.choices:
        return next(c for c in h.choices if c != h.default)
    if h.kind is int:
        return int(h.default) + 1
    return 0.25 if h.high is not None else round(float(h.default) * 1.5 + 0.1, 4)


def _flags(values: dict, model: str) -> list[str]:
    decl = {h.name: h for h in hparams_of(model)}
    out = []
    for k, v in values.items():
        flag = decl[k].cli_flag
        if decl[k].kind is bool:
            out.append(flag if v else "--no-" + flag[2:])
        elif decl[k].kind is list:
            out += [flag, ",".join(v)]
        else:
            out += [flag, str(v)]
    return out


@pytest.mark.parametrize("model", list(MODELS))
def test_every_declared_name_reaches_the_model_and_the_checkpoint(synth_log, tmp_path, model,
                                                                 capsys):
    from stream_app.cli import main

    values = {h.name: _alt(h) for h in hparams_of(model)}
    if model == "sasrec":
        values["features"] = []  # bfloat16 loss: items only, plain sampled softmax
    out = tmp_path / "ck"
    assert main(["train", "--data", str(synth_log), "--format", "jsonl", "--model", model,
                 "--out", str(out), "--protocol", "loo", "--quiet", "--threads", "1",
                 "--device", "cpu", *_flags(values, model)]) == 0
    rec = read_meta(out)["hparams"]
    assert set(rec["values"]) == set(values)
    for k, v in values.items():
        assert rec["values"][k] == v, k
        assert rec["sources"][k] == "flag", k
    m = load_model(out, device="cpu")
    for k, v in values.items():
        if k in m.config:
            assert m.config[k] == v, k
    if model in NEURAL:  # the training options reached the trainer
        ran = read_meta(out)["training"][0]["config"]
        for h in TRAIN_HPARAMS:
            assert ran[h.name] == values[h.name], h.name


def test_a_knn_hyper_parameter_on_the_command_line_reaches_the_model(synth_log, tmp_path,
                                                                      capsys):
    """Before the declarations the CLI dropped every hyper-parameter of models other than
    GRU4Rec and SASRec without a word."""
    from stream_app.cli import main

    data = ["--data", str(synth_log), "--format", "jsonl", "--protocol", "session"]
    assert main(["train", *data, "--model", "vstan", "--out", str(tmp_path / "v"),
                 "--lambda-idf", "2.5", "--k", "12", "--quiet"]) == 0
    m = load_model(tmp_path / "v")
    assert (m.config["lambda_idf"], m.config["k"]) == (2.5, 12)
    assert main(["evaluate", *data, "--model", "itemknn", "--window", "3", "--neighbours", "7",
                 "--save", str(tmp_path / "i"), "--bootstrap", "0", "--json"]) == 0
    m = load_model(tmp_path / "i")
    assert (m.config["window"], m.config["neighbours"]) == (3, 7)
    # --config and a flag: the flag wins
    assert main(["evaluate", *data, "--model", "sknn", "--config", '{"k": 3, "sample_size": 9}',
                 "--k", "5", "--save", str(tmp_path / "s"), "--bootstrap", "0", "--json"]) == 0
    m = load_model(tmp_path / "s")
    assert (m.config["k"], m.config["sample_size"]) == (5, 9)


def test_a_flag_the_model_does_not_take_is_named_not_silently_dropped(synth_log, tmp_path,
                                                                     capsys):
    from stream_app.cli import main

    assert main(["train", "--data", str(synth_log), "--format", "jsonl", "--model", "markov",
                 "--out", str(tmp_path / "m"), "--heads", "4", "--quiet"]) == 0
    assert "--heads does not apply to markov" in capsys.readouterr().err


def test_training_flags_given_with_a_checkpoint_are_said_to_be_ignored(synth_log, tmp_path,
                                                                     capsys):
    from stream_app.cli import main

    data = ["--data", str(synth_log), "--format", "jsonl", "--protocol", "loo"]
    ck = str(tmp_path / "m")
    assert main(["train", *data, "--model", "markov", "--out", ck, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", *data, "--model", ck, "--bootstrap", "0"]) == 0
    assert "ignored" not in capsys.readouterr().err
    assert main(["evaluate", *data, "--model", ck, "--dim", "32", "--no-bias",
                 "--max-minutes", "1", "--bootstrap", "0"]) == 0
    warn = [x for x in capsys.readouterr().err.splitlines() if "ignored" in x]
    assert warn == [f"warning: --dim, --bias, --max-minutes ignored: checkpoint {ck} runs as "
                    "trained"]


@pytest.mark.parametrize("command", ["train", "tune"])
def test_train_and_tune_read_and_split_alike(synth_log, tmp_path, capsys, command):
    from stream_app.cli import main

    base = [command, "--data", str(synth_log), "--format", "jsonl", "--out", str(tmp_path / "o")]
    assert main([*base, "--model", "nosuch"]) != 0
    assert "unknown model 'nosuch'" in capsys.readouterr().err
    assert main([*base, "--model", "markov", "--valid-users", "5"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"seqstream {command}: error: --valid-users applies to --protocol loo "
                   "only"], err


@pytest.mark.parametrize("argv,msg", [
    (["--model", "stan", "--lambda-spw", "-1"], "--lambda-spw: -1 is not a number >= 0"),
    (["--model", "vsknn", "--weighting", "cubic"], "invalid choice: 'cubic'"),
    (["--model", "sknn", "--k", "0"], "--k: 0 is not a positive integer"),
])
def test_bad_hyper_parameter_values_end_in_one_line(tmp_path, capsys, argv, msg):
    from stream_app.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


# --------------------------------------------------------------------------- data-shape defaults
SESSION_LOG = DataShape("session", n_items=2_933, n_sequences=14_000, n_events=60_000)
USER_LOG = DataShape("user", n_items=992, n_sequences=904, n_events=18_000)
BIG_USER_LOG = DataShape("user", n_items=54_000, n_sequences=40_000, n_events=300_000)


def test_a_session_log_and_a_user_log_pick_different_recipes():
    s = choose("gru4rec", SESSION_LOG)
    u = choose("gru4rec", USER_LOG)
    assert s.recipe == "rsc15" and u.recipe == "rsc15-small"
    assert s.values["batch_order"] == "parallel" and s.values["optimizer"] == "adagrad"
    assert u.values["epochs"] == 30 and s.values["epochs"] == 14
    # a user log of more than FEW_STEPS_LOG events: enough steps per epoch for rsc15's 14
    mid = choose("gru4rec", DataShape("user", n_items=4_954, n_sequences=4_475,
                                      n_events=FEW_STEPS_LOG + 1))
    assert mid.recipe == "rsc15" and mid.values["epochs"] == 14
    assert choose("sasrec", USER_LOG).recipe == "small-log-sasrec"
    f = choose("gru4rec", USER_LOG, {"features": ["action"]})
    assert f.recipe == "small-log" and f.values["batch_order"] == "length"
    # item text vectors are item inputs: the rsc15 recipe (with its item bias, which grows
    # with metadata-only items: tests/test_text.py) runs with them too
    t = choose("gru4rec", USER_LOG, run={"item_mode": "fused"})
    assert t.recipe == "rsc15-small" and t.values["bias"]
    assert "session log" in s.reasons[0] and "rsc15" in s.reasons[0]
    assert "user log" in u.reasons[0]
    big = choose("sasrec", BIG_USER_LOG, run={})
    assert big.recipe == "large-catalogue" and BIG_USER_LOG.n_items > LARGE_CATALOGUE
    assert big.values["loss"] == "sampled" and big.values["loss_dtype"] == "bfloat16"
    assert big.values["max_seconds"] == 1400.0 and any("time budget" in r for r in big.reasons)
    # every declared name gets a value, from the recipe or the declaration
    for c, model in ((s, "gru4rec"), (u, "gru4rec"), (big, "sasrec")):
        assert {h.name for h in hparams_of(model)} <= set(c.values)


def test_an_explicit_value_always_wins():
    c = choose("gru4rec", SESSION_LOG, {"dim": 32, "dropout": 0.0})
    assert c.values["dim"] == 32 and c.sources["dim"] == "flag"
    assert c.values["dropout"] == 0.0 and c.values["embed_dropout"] == 0.1
    assert "given flags win: dim, dropout" in c.reasons[0]
    big = choose("sasrec", BIG_USER_LOG, run={"max_seconds": 60.0})
    assert "max_seconds" not in big.values  # the given budget stands


def test_a_recipes_optimiser_settings_go_together():
    c = choose("gru4rec", SESSION_LOG, {"optimizer": "adam"})
    assert c.values["optimizer"] == "adam"
    assert c.values["lr"] == 1e-3 and c.values["lr_schedule"] == "constant"  # declared
    assert c.values["batch_order"] == "parallel"  # the rest of the recipe stays
    assert set(OPTIMISER_GROUP) <= {h.name for h in TRAIN_HPARAMS}


def test_counting_models_take_their_declared_defaults():
    c = choose("stan", SESSION_LOG)
    assert c.recipe is None and not c.reasons
    assert c.values == {h.name: h.default for h in hparams_of("stan")}


def test_loo_on_many_users_validates_on_a_sample():
    assert default_valid_users("loo", 40_226) == 10_000
    assert default_valid_users("loo", 904) is None
    assert default_valid_users("temporal", 40_226) is None


def test_train_prints_and_records_what_the_defaults_chose(synth_log, tmp_path, capsys):
    from stream_app.cli import main

    out = tmp_path / "g"
    assert main(["train", "--data", str(synth_log), "--format", "jsonl", "--model", "gru4rec",
                 "--protocol", "session", "--out", str(out), "--epochs", "1", "--dim", "8",
                 "--threads", "1", "--device", "cpu", "--max-minutes", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "defaults: session log" in err and "rsc15" in err
    rec = read_meta(out)["hparams"]
    assert rec["recipe"] == "rsc15"
    assert rec["sources"]["dim"] == "flag" and rec["values"]["dim"] == 8
    assert rec["sources"]["optimizer"] == "recipe" and rec["values"]["optimizer"] == "adagrad"
    # --max-minutes 0.5: 30 s for fit and refit, the fit getting its share (model_core.fit)
    assert 0 < read_meta(out)["training"][0]["config"]["max_seconds"] < 30.0
    # a user log picks another recipe
    assert main(["train", "--data", str(synth_log), "--format", "jsonl", "--model", "gru4rec",
                 "--protocol", "loo", "--out", str(out), "--epochs", "1", "--dim", "8",
                 "--quiet", "--threads", "1", "--device", "cpu"]) == 0
    assert read_meta(out)["hparams"]["recipe"] == "rsc15-small"
    assert read_meta(out)["hparams"]["values"]["epochs"] == 1  # given
    # the synthetic log repeats items (carts of the item just viewed): validation ranks seen
    # items as evaluate does by default
    assert "of targets repeat → validation ranks seen items" in capsys.readouterr().err
    assert read_meta(out)["training"][0]["config"]["valid_exclude_history"] is False


def test_validation_ranks_history_items_where_targets_repeat():
    from model_core.datasets.synth import generate
    from model_core.defaults import REPEAT_SHARE, repeat_share, valid_exclude_history
    from model_core.splits import make_split

    def log(rows):  # one user per row of item ids
        from schemas import Event

        return [Event(event_id=f"{u}:{i}", user_id=f"u{u}", item_id=f"i{x}", action="view",
                      timestamp_ms=1000 * (10 * u + i)) for u, r in enumerate(rows)
                for i, x in enumerate(r)]

    # loo validation targets: the second-last items 3 (seen before), 7 (not), 1 (seen)
    split = make_split(log([[3, 1, 3, 9], [5, 6, 7, 4], [1, 7, 1, 1]]), "loo")
    assert repeat_share(split.valid) == pytest.approx(2 / 3)
    assert repeat_share(make_split(log([[1, 2, 3, 4], [5, 6, 7, 8]]), "loo").valid) == 0.0
    assert valid_exclude_history("loo", 0.0) == (True, None)  # Beauty: no repeats
    exclude, why = valid_exclude_history("temporal", REPEAT_SHARE)
    assert not exclude and why.startswith("1% of targets repeat") and len(why) <= 70
    assert valid_exclude_history("session", 0.0) == (False, None)
    share = repeat_share(make_split(generate(2000, seed=3), "loo").valid)
    assert 0.1 < share < 0.4  # carts/favourites/purchases of the item just viewed


# --------------------------------------------------------------------------- progress
def test_an_epoch_line_fits_80_columns_with_its_time_prefix():
    rec = {"loss": 123456.789, "seconds": 98765.4}
    metrics = {"ndcg@10": 0.123456, "hr@10": 0.98765}
    line = epoch_line(1234, 10000, rec, metrics, True, 1e6, 2e6)
    assert len("HH:MM:SS ") + len(line) <= LINE_WIDTH
    assert "ndcg@10 0.1235*" in line
    assert "ndcg" not in epoch_line(1, 2, {"loss": 1.0, "seconds": 1.0}, None, False, 1.0)


def test_one_line_per_epoch_when_stderr_is_not_a_terminal(synth_log, tmp_path, capsys):
    from stream_app.cli import main

    assert main(["train", "--data", str(synth_log), "--format", "jsonl", "--model", "sasrec",
                 "--protocol", "loo", "--out", str(tmp_path / "s"), "--epochs", "3",
                 "--patience", "3", "--dim", "8", "--threads", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    epochs = [line for line in err if " epoch " in line and "ndcg@10" in line]
    assert len(epochs) == 3
    assert all(len(line) <= LINE_WIDTH for line in epochs)
    meta = read_meta(tmp_path / "s")
    assert json.dumps(meta["hparams"]["values"])  # JSON-serialisable
