"""``seqstream inspect``: for each layout a newcomer brings, a small log written here goes
inspect --json -> its args -> train --model markov -> evaluate, flags only."""

from __future__ import annotations

import json
import random
import shlex
from datetime import datetime, timedelta, timezone

import pytest

from model_core.datasets.sniff import guess_reading
from stream_app.cli import main

T0_S = 1_569_888_004  # 2019-10-01 00:00:04 UTC
ACTIONS = ("view", "view", "view", "cart", "purchase", "remove_from_cart")


def _rows(n_users=25, seed=3):
    """(user, item, unix s, action) with a successor structure a Markov model can learn."""
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        t = T0_S + rng.randint(0, 5 * 86400)
        item = rng.randint(0, 29)
        for _ in range(rng.randint(6, 12)):
            t += rng.randint(10, 3000)
            item = (item + 1) % 30 if rng.random() < 0.8 else rng.randint(0, 29)
            rows.append((u, item, t, rng.choice(ACTIONS)))
    rows.sort(key=lambda r: r[2])
    return rows


def _utc(t, fmt="%Y-%m-%d %H:%M:%S UTC"):
    return datetime.fromtimestamp(t, timezone.utc).strftime(fmt)


def _csv_header(rows):
    out = ["user,item,timestamp,action"]
    out += [f"u{u},i{i},{t},{a}" for u, i, t, a in rows]
    return "\n".join(out) + "\n"


def _tsv(rows):
    code = {"view": 1, "cart": 2, "remove_from_cart": 3, "purchase": 4}
    out = ["uid\tsku\tts\tkind"] + [f"u{u}\ti{i}\t{t}\t{code[a]}" for u, i, t, a in rows]
    return "\n".join(out) + "\n"


def _flat_jsonl(rows):
    plus2 = timezone(timedelta(hours=2))
    return "".join(json.dumps({"visitor": f"v{u}", "product": {"sku": f"p{i}"},
                               "when": datetime.fromtimestamp(t, plus2).isoformat(),
                               "type": a}) + "\n" for u, i, t, a in rows)


def _nested_jsonl(rows):
    sessions: dict[int, list] = {}
    for u, i, t, a in rows:
        sessions.setdefault(u, []).append({"item": f"i{i}", "ts": t * 1000, "action": a})
    return "".join(json.dumps({"session_id": f"s{u}", "events": ev}) + "\n"
                   for u, ev in sessions.items())


def _datetimes(rows):
    out = ["customer;article;date;event"]
    out += [f"c{u};a{i};{_utc(t, '%d/%m/%Y %H:%M:%S')};{a}" for u, i, t, a in rows]
    return "\n".join(out) + "\n"


def _rees46(rows):
    out = ["event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
           "user_session"]
    out += [f"{_utc(t)},{a},{1000 + i},2053013555631882655,,acme,{i + 0.99},{500 + u},"
            f"sess-{u}" for u, i, t, a in rows]
    out.append(f"{_utc(rows[-1][2] + 5)},view,1003,2053013555631882655,,acme")  # cut off
    return "\n".join(out) + "\n"


def _retailrocket(rows):
    name = {"view": "view", "cart": "addtocart", "purchase": "transaction"}
    out = ["timestamp,visitorid,event,itemid,transactionid"]  # no removals in this layout
    out += [f"{t * 1000},{u},{name[a]},{i},{'77' if a == 'purchase' else ''}"
            for u, i, t, a in rows if a in name]
    return "\n".join(out) + "\n"


# name -> (file name, writer, format, flags inspect must give, extra inspect flags)
LAYOUTS = {
    "csv-header": ("log.csv", _csv_header, "csv", ["--time-unit", "s", "--actions"], []),
    "tsv-coded-actions": ("log.tsv", _tsv, "csv", ["--time-unit", "s"],
                          ["--actions", '{"1": "view", "2": "cart", "3": null, "4": "purchase"}']),
    "flat-jsonl": ("flat.jsonl", _flat_jsonl, "jsonl", ["--columns"], []),
    "nested-jsonl": ("nested.jsonl", _nested_jsonl, "jsonl", ["--time-unit", "ms"], []),
    "date-times": ("log.txt", _datetimes, "csv", ["--time-format", "%d/%m/%Y %H:%M:%S",
                                                  "--opt", "delimiter=semicolon"], []),
    "rees46": ("2019-Oct.csv", _rees46, "csv", ["--actions"], []),
    "retailrocket": ("events.csv", _retailrocket, "csv", ["--time-unit", "ms"], []),
}


def _inspect_json(capsys, path, extra=()):
    rc = main(["inspect", str(path), "--json", *extra])
    out = capsys.readouterr().out.strip().splitlines()
    return rc, json.loads(out[-1])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_inspect_args_take_each_layout_through_train_and_evaluate(tmp_path, capsys, layout):
    name, writer, fmt, expected, extra = LAYOUTS[layout]
    rows = _rows()
    path = tmp_path / name
    path.write_text(writer(rows), encoding="utf-8")

    rc, info = _inspect_json(capsys, path, extra)
    assert rc == 0 and info["format"] == fmt
    args = info["args"]
    for flag in expected:
        assert flag in args, (flag, args)
    kept = [r for r in rows if r[3] != "remove_from_cart"]
    # every layout holds the same shopping: the events it keeps are the non-removals
    assert info["events"] == len(kept), info
    assert info["dropped"] == (0 if layout == "retailrocket" else len(rows) - len(kept))
    assert info["rejected"] == (1 if layout == "rees46" else 0)
    if layout == "rees46":
        assert "record cut off" in info["first_reasons"][0]
    assert info["users"] == len({r[0] for r in kept})
    assert set(info["actions"]) == {"view", "cart", "purchase"}
    assert info["time_range"][0].startswith("2019-10-0")
    assert len(info["first_events"]) == 5

    ckpt = tmp_path / "ckpt"
    assert main(["train", "--data", str(path), *args, "--model", "markov", "--out", str(ckpt),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--data", str(path), *args, "--model", str(ckpt),
                 "--bootstrap", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["protocol"] == "temporal"  # the checkpoint's own protocol
    assert res["n_test_cases"] > 0 and res["metrics"]["hr@10"] > 0


def test_three_spellings_of_one_log_give_the_same_events(tmp_path, capsys):
    """REES46 CSV, flat JSONL with an offset and nested JSONL of the same rows read alike."""
    rows = _rows(n_users=8)
    seen = []
    for name, writer in (("a.csv", _rees46), ("b.jsonl", _flat_jsonl), ("c.jsonl", _nested_jsonl)):
        p = tmp_path / name
        p.write_text(writer(rows), encoding="utf-8")
        _, info = _inspect_json(capsys, p, ["--show", "100"])
        seen.append([(e["timestamp_ms"], e["action"]) for e in info["first_events"]])
    assert seen[0] == seen[1] == sorted(seen[2])


def test_given_options_override_the_guess_and_appear_in_args(tmp_path, capsys):
    p = tmp_path / "log.csv"
    p.write_text(_csv_header(_rows(n_users=3)), encoding="utf-8")
    _, info = _inspect_json(capsys, p, ["--timezone", "Europe/Berlin",
                                        "--actions", '{"remove_from_cart": "cart"}'])
    assert info["args"][-2:] == ["--timezone", "Europe/Berlin"]
    assert '{"remove_from_cart":"cart"}' in info["args"] and info["dropped"] == 0


def test_inspect_text_output_names_mapping_counts_and_flags(tmp_path, capsys):
    p = tmp_path / "events.csv"
    p.write_text(_retailrocket(_rows(n_users=4)), encoding="utf-8")
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "user_id      <- visitorid" in out and "times are epoch numbers in ms" in out
    assert "--format csv --columns" in out and "seqstream train --data" in out


def test_inspect_text_fits_80_columns_and_knows_analytics_action_names(tmp_path, capsys,
                                                                        monkeypatch):
    """A layout the tests did not write before: semicolons, ISO times, GA4-style names."""
    monkeypatch.setenv("COLUMNS", "80")
    rows = ["ts;customer;sku;event_type;price"]
    for i, (u, it, t, a) in enumerate(_rows(n_users=6)):
        name = {"view": "page_view", "cart": "add_to_cart", "purchase": "Order Completed",
                "remove_from_cart": "remove_from_cart"}[a]
        rows.append(f"{_utc(t, '%Y-%m-%dT%H:%M:%SZ')};customer-{u};SKU-{it:05d};{name};"
                    f"{i % 97 + 0.5}")
    p = tmp_path / "shop export.csv"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "view " in out.split("actions:")[1] and "dropped by the action mapping" in out
    long = [ln for ln in out.splitlines()[1:] if len(ln) > 80]  # [0] names the long path
    # only a line holding one word that cannot be cut (the columns JSON, the path) may pass
    assert long and all(len(shlex.split(ln.removesuffix(" \\"))) <= 2 for ln in long), long
    assert "--opt delimiter=semicolon" in out


def test_inspect_of_a_log_with_no_valid_line_exits_1(tmp_path, capsys):
    p = tmp_path / "log.csv"
    p.write_text("user,item,timestamp\nu,i,yesterday\n", encoding="utf-8")
    rc, info = _inspect_json(capsys, p)
    assert rc == 1 and info["events"] == 0 and info["rejected"] == 1


@pytest.mark.parametrize("text,match", [("", "empty"), ("just some words here\n", "delimiter")])
def test_unreadable_files_are_one_clear_error(tmp_path, capsys, text, match):
    p = tmp_path / "x.dat"
    p.write_text(text, encoding="utf-8")
    assert main(["inspect", str(p)]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_known_layouts_are_named(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("SessionId\tItemId\tTime\n1\t2\t1396321200.5\n", encoding="utf-8")
    assert guess_reading(p).fmt == "yoochoose"
    p.write_text("1,2,3,pv,1511544070\n1,5,3,buy,1511544071\n", encoding="utf-8")
    assert guess_reading(p).fmt == "taobao"
    p.write_text("1 2\n1 3\n2 3\n", encoding="utf-8")
    assert guess_reading(p).fmt == "seqtxt"


def test_train_reads_a_foreign_csv_as_inspect_guesses_it(tmp_path, capsys, monkeypatch):
    """RetailRocket-style columns (visitorid, itemid, event, ms times): `inspect` worked out
    the mapping, but `train`/`compare` without flags stopped at 'no column for required
    field(s) user_id, item_id'. They now read it as inspect guesses, and say so."""
    from model_core.checkpoint import read_meta
    from stream_app.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    for i in range(400):
        ev = ("view", "addtocart", "transaction")[i % 7 % 3]
        rows.append(f"{1433221332117 + 60_000 * i},{i % 23},{ev},{(i * 7) % 41},")
    log = tmp_path / "events.csv"
    log.write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(log), "--model", "markov",
                 "--out", str(tmp_path / "ck")]) == 0
    err = capsys.readouterr().err
    # within 80 columns, but for the one-word --columns JSON and the (long, temporary) path:
    # words are never cut, they are copied
    assert all(len(line.replace(str(log), "")) <= 80 or len(line.split()) == 1
               for line in err.splitlines()), err
    flat = " ".join(err.split())
    assert "read as `seqstream inspect` guesses: --format csv --columns" in flat
    assert '"user_id":"visitorid"' in flat and "--time-unit ms" in flat
    assert read_meta(tmp_path / "ck")["data"]["format"] == "csv"
