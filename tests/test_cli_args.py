"""Bad usage ends in one line: numbers checked when arguments are parsed, reader options
shared, protocols that cannot test a checkpoint on its own training data."""

from __future__ import annotations

import json

import pytest

from model_core.checkpoint import read_meta
from model_core.split_guard import training_overlap
from stream_app.cli import main

T0_S = 1_569_888_004


def _log(tmp_path, name="log.csv", sep=","):
    lines = [sep.join(("user_id", "item_id", "timestamp"))]
    for u in range(12):
        for k in range(8):
            lines.append(sep.join((f"u{u}", f"i{(u + k) % 15}", str(T0_S + 3600 * k + 60 * u))))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("argv,what", [
    (["train", "--model", "markov", "--out", "o", "--epochs", "0"], "--epochs: 0 is not a positive"),
    (["train", "--model", "markov", "--out", "o", "--batch-size", "-8"], "--batch-size"),
    (["train", "--model", "markov", "--out", "o", "--lr", "-0.1"], "--lr: -0.1 is not a positive"),
    (["train", "--model", "markov", "--out", "o", "--dropout", "1.5"], "in 0..1"),
    (["train", "--model", "markov", "--out", "o", "--max-seconds", "0"], "--max-seconds"),
    (["train", "--model", "markov", "--out", "o", "--negatives", "x"], "not an integer"),
    (["evaluate", "--model", "markov", "--quantile", "1"], "strictly between 0 and 1"),
    (["evaluate", "--model", "markov", "--max-cases", "0"], "--max-cases"),
    (["evaluate", "--model", "markov", "--bootstrap", "-1"], "--bootstrap"),
    (["compare", "a", "b", "--epochs", "-2"], "--epochs"),
    (["replay", "--limit", "-1"], "--limit: -1 is not a positive"),
    (["replay", "--speed", "0"], "--speed"),
    (["inspect", "--show", "0"], "--show"),
])
def test_out_of_range_numbers_are_rejected_at_parse_time_in_one_line(tmp_path, capsys, argv,
                                                                       what):
    data = ["--data", str(tmp_path / "none.csv")] if argv[0] in ("train", "evaluate",
                                                                  "compare") else []
    pos = [str(tmp_path / "none.csv")] if argv[0] in ("replay", "inspect") else []
    with pytest.raises(SystemExit) as e:
        main([argv[0], *pos, *data, *argv[1:]])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0] and err[0].startswith(f"seqstream {argv[0]}: error")
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.split()
    assert out[0] == "seqstream" and out[1][0].isdigit()


def test_train_takes_the_reader_options_and_a_tab_delimiter(tmp_path, capsys):
    p = _log(tmp_path, "log.txt", sep="\t")
    out = tmp_path / "ck"
    # a literal tab, as `--opt "delimiter=$(printf '\t')"` gives it, is not stripped away
    assert main(["train", "--data", str(p), "--format", "csv", "--opt", "delimiter=\t",
                 "--model", "markov", "--out", str(out), "--quiet"]) == 0
    meta = read_meta(out)
    assert meta["data"]["reader_options"] == {"delimiter": "\t"}
    assert meta["data"]["events"] == 96
    assert meta["split"]["protocol"] == "temporal"  # train's default is evaluate's
    assert main(["train", "--data", str(p), "--format", "csv", "--opt", "delimiter=tab",
                 "--columns", '{"user_id": "user_id"}', "--time-unit", "s",
                 "--model", "markov", "--out", str(tmp_path / "ck2"), "--quiet"]) == 0


def test_train_output_fits_80_columns(tmp_path, capsys, monkeypatch):
    """What a newcomer's terminal shows: the defaults' reasons, the data summary and the
    saved line wrap to its width, even under a long output path."""
    monkeypatch.setenv("COLUMNS", "80")
    p = _log(tmp_path, "log.txt", sep="\t")
    out = tmp_path / ("a-rather-long-directory-name-for-the-checkpoint-" * 2)
    assert main(["train", "--data", str(p), "--format", "csv", "--opt", "delimiter=tab",
                 "--model", "markov", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    lines = (cap.out + cap.err).splitlines()
    assert any(ln.startswith("saved markov") for ln in lines)
    too_long = [ln for ln in lines if len(ln) > 80 and len(ln.split()) > 1]
    assert not too_long, too_long


def test_replay_of_a_file_with_no_valid_line_exits_1(tmp_path, capsys, monkeypatch):
    import stream_app.kafka.replay as replay_mod

    p = tmp_path / "bad.csv"
    p.write_text("user,item,timestamp\nu,i,never\n", encoding="utf-8")
    seen = {}

    def fake_replay_file(settings, path, fmt, **kw):
        seen.update(kw, fmt=fmt)
        return replay_mod.ReplayReport(sent=0, rejected=1, seconds=0.1,
                                       rejected_reasons=["line 2: timestamp 'never' ..."])

    monkeypatch.setattr(replay_mod, "replay_file", fake_replay_file)
    assert main(["replay", str(p), "--format", "csv", "--time-unit", "s", "--no-progress"]) == 1
    assert "no valid events" in capsys.readouterr().err
    assert seen["time_unit"] == "s" and seen["fmt"] == "csv"


def test_a_checkpoint_is_not_evaluated_on_its_own_training_data(tmp_path, capsys):
    p = _log(tmp_path)
    ck = tmp_path / "ck"
    assert main(["train", "--data", str(p), "--model", "markov", "--out", str(ck),
                 "--quiet"]) == 0
    base = ["evaluate", "--data", str(p), "--model", str(ck), "--bootstrap", "10"]
    capsys.readouterr()
    assert main(base + ["--protocol", "loo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on the temporal split" in err[0]
    assert main(base + ["--quantile", "0.5"]) == 2  # an earlier cut: in between is in both
    assert "in both parts" in capsys.readouterr().err
    assert main(base + ["--protocol", "loo", "--allow-overlap"]) == 0
    assert "WARNING: test part overlaps training data" in capsys.readouterr().err
    assert main(base + ["--quantile", "0.9", "--json"]) == 0  # a later cut is clean
    assert main(base + ["--protocol", "prequential", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["protocol"] == "prequential"


META = {"data": {"sha256_16": "abc", "test_file": None},
        "split": {"protocol": "temporal", "info": {"cut_ts": 1000}}}


@pytest.mark.parametrize("protocol,info,sha,test_file,conflict", [
    ("temporal", {"cut_ts": 1000}, "abc", None, False),
    ("temporal", {"cut_ts": 2000}, "abc", None, False),
    ("temporal", {"cut_ts": 999}, "abc", None, True),
    ("prequential", {"cut_ts": 1000}, "abc", None, False),
    ("loo", {}, "abc", None, True),
    ("session", {"cut_ts": 1000}, "abc", None, True),
    ("loo", {}, "other-file", None, False),  # another file cannot be checked
])
def test_training_overlap_rules(protocol, info, sha, test_file, conflict):
    assert (training_overlap(META, protocol, info, sha, test_file) is not None) is conflict


def test_training_overlap_session_test_files_and_unrecorded_splits():
    meta = {"data": {"sha256_16": "abc", "test_file": "t.txt"}, "split": {"protocol": "session"}}
    assert training_overlap(meta, "session", {}, "abc", "t.txt") is None
    assert "test file" in training_overlap(meta, "session", {}, "abc", "u.txt")
    assert training_overlap({"source": "demo"}, "loo", {}, "abc") is None


def test_printed_figures_are_rounded(capsys):
    from stream_app.commands._common import figure
    from stream_app.commands.demo import _print_summary

    assert [figure(v) for v in (1408.3747777347442, 3.14159, 0.012345, 1234567, None)] == [
        "1,408", "3.14", "0.0123", "1,234,567", "-"]
    row = {"hr@10": 0.5, "ndcg@10": 0.25, "mrr@10": 0.2}
    _print_summary({"events_per_s": 1408.3747777347442, "train_seconds": 12.345678,
                    "online": row, "prequential_offline": row, "baseline_popular": row})
    out = capsys.readouterr().out
    assert "1,408" in out and "12.35" in out and "1408.37" not in out


def test_replay_leaves_rows_dropped_by_the_action_mapping_out_of_the_dead_letters(tmp_path):
    from stream_app.kafka.replay import load_sorted

    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id,timestamp,action\n"
                 f"u,a,{T0_S + 1},view\nu,b,{T0_S},remove_from_cart\nu,c,{T0_S},teleport\n",
                 encoding="utf-8")
    events, rejected = load_sorted(p, "csv", actions={"remove_from_cart": None})
    assert [e.item_id for e in events] == ["a"]
    assert [r.line_no for r in rejected] == [4]  # the bad row only, not the dropped one


@pytest.mark.parametrize("flag,value,match", [
    ("--columns", "{bad", "--columns is not valid JSON"),
    ("--actions", '{"x": "teleport"}', "actions: 'x' -> unknown action"),
    ("--opt", "delimiter=tabs", "delimiter must be one character"),
    ("--timezone", "Mars/Olympus", "unknown time zone"),
    ("--time-unit", "ms", "no option(s) time_unit"),  # taobao has no such option
])
def test_bad_reader_options_are_one_line(tmp_path, capsys, flag, value, match):
    p = _log(tmp_path)
    fmt = "taobao" if flag == "--time-unit" else "csv"
    assert main(["train", "--data", str(p), "--format", fmt, flag, value, "--model", "markov",
                 "--out", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_a_reader_that_closes_the_pipe_gets_no_traceback(tmp_path):
    """`seqstream inspect FILE | head`: the pipe is closed before the command writes."""
    import subprocess
    import sys

    log = tmp_path / "e.jsonl"
    log.write_text('{"user_id": "u1", "item_id": "i1", "action": "view", "ts": 1}\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "inspect", str(log), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before a byte is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
