"""``seqstream report RESULT.json ...``: the offline comparison page, from results the real
``evaluate`` and ``compare`` commands print on a small synthetic log."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from model_core.datasets.synth import generate, write_jsonl
from stream_app.cli import main


def _run_json(argv: list[str]) -> str:
    """The last stdout line of a seqstream command (its --json object)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    log = d / "synth.jsonl"
    write_jsonl(generate(2000, seed=3), log)
    data = ["--data", str(log), "--format", "jsonl", "--protocol", "loo", "--ks", "5,10",
            "--bootstrap", "50", "--json"]
    out = {}
    for model in ("popular", "markov"):
        out[model] = d / f"{model}.json"
        out[model].write_text(_run_json(["evaluate", "--model", model, *data]) + "\n")
    out["compare"] = d / "compare.json"
    out["compare"].write_text(_run_json(["compare", "popular", "markov", "itemknn", *data]))
    return out


def test_page_compares_every_model_and_metric(results, tmp_path, capsys):
    page, png = tmp_path / "r" / "report.html", tmp_path / "fig.png"
    rc = main(["report", str(results["popular"]), str(results["markov"]),
               str(results["compare"]), "--out", str(page), "--png", str(png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"report: {page}"
    assert printed.splitlines()[1] == "  5 models: synth.jsonl — loo"
    html = page.read_text()
    ev = json.loads(results["markov"].read_text())
    cmp = json.loads(results["compare"].read_text())
    for label in ("popular [popular.json]", "markov [markov.json]", "popular [compare.json]",
                  "markov [compare.json]", "itemknn"):
        assert f">{label}<" in html
    for name in ev["metrics"]:  # every metric at every K, in the table of all metrics
        assert f">{name}<" in html
    for head in ("HR@10", "NDCG@10", "MRR@10", "novelty@10", "ARP@10", "long tail@10",
                 "Gini@10", "coverage", "HR repeat / new", "adjusted p", "data SHA-256"):
        assert head in html
    seg = ev["extra"]["segments"]["popularity"]["head"]["hr@10"]
    assert f"HR {seg['mean']:.4f} <small>[{seg['ci_low']:.4f}" in html
    assert ev["provenance"]["commit"] in html
    assert next(iter(ev["provenance"]["data_sha256"].values())) in html
    # compare's own Holm-adjusted p-value of one test, as its bound or its value
    t = cmp["comparisons"][0]["paired"]["hr@10"]
    assert f"{t['a']:.4f}" in html and f"{t['mean_diff']:+.4f}" in html
    assert html.count("data:image/png;base64,") == 2  # main figure + segments
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hostile_names_are_escaped_and_optional_fields_shown(results, tmp_path):
    ev = json.loads(results["markov"].read_text())
    ev["model"] = '<img src=x onerror="alert(1)">$\\frac{1}{0}$'
    ev["metrics"]["ild@10"] = 0.4321
    ev["cost"] = {"trained_here": True, "train_s": 12.5, "peak_rss_mb": 321.0, "note": "<b>"}
    other = json.loads(results["popular"].read_text())
    other["provenance"]["data_sha256"] = {"<i>other.jsonl": "ab" * 32}
    (tmp_path / "a.json").write_text(json.dumps(ev))
    (tmp_path / "b.json").write_text(json.dumps(other))
    page = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                 "--out", str(page)]) == 0
    html = page.read_text()
    assert "<img src=x" not in html and "<i>other" not in html and "<b>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;$\\frac{1}{0}$" in html
    assert "&lt;i&gt;other.jsonl" in html
    assert "ILD@10" in html and "0.432" in html and "<th>train_s</th>" in html and "321" in html
    assert html.count("<h2 ") == 2  # two data sets: two sections, never one mixed table


@pytest.mark.parametrize("content, why", [
    ("not json at all\n", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"frozen": {}, "online": {}, "learner": {}}', "evaluate --learn"),
    ('{"something": 1}', 'no "metrics"'),
    ('{"metrics": {"hr@10": "high"}, "ks": [10], "protocol": "loo", "n_test_cases": 1}',
     "not a number"),
    ('{"metrics": {"hr@10": 0.5}, "protocol": "loo", "n_test_cases": 1}', 'no "ks"'),
    ('{"models": ["a"], "results": [], "comparisons": []}', "lists of one length"),
])
def test_a_bad_file_is_one_line_naming_it(results, tmp_path, capsys, content, why):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    page = tmp_path / "report.html"
    rc = main(["report", str(results["popular"]), str(bad), "--out", str(page)])
    err = capsys.readouterr().err
    assert rc == 2 and not page.exists()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(bad) in err and why in err


def test_readme_comparison_commands_parse():
    """The README's "Comparing models" commands name flags the commands have."""
    import re
    import shlex
    from pathlib import Path

    from stream_app.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Comparing models.*?```bash\n(.*?)```", text, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    commands = [shlex.split(ln, comments=True) for ln in lines if ln.startswith("seqstream ")]
    assert [c[1] for c in commands] == ["compare", "compare", "report"]
    parser = build_parser()
    for argv in commands:
        argv = argv[1:argv.index(">")] if ">" in argv else argv[1:]
        parser.parse_args(argv)  # an unknown flag exits (SystemExit fails the test)


def test_sliding_window_tests_of_prequential_compares_are_shown(results, tmp_path):
    cmp = json.loads(results["compare"].read_text())
    win = {"mean_diff": -0.25, "ci_low": -0.3, "ci_high": -0.2, "p_value": 0.0, "windows": 20,
           "windows_a_better": 1, "windows_b_better": 19}
    cmp["comparisons"][0]["paired_windows"] = {"hr@10": win, "ndcg@10": {"bad": True}}
    (tmp_path / "w.json").write_text(json.dumps(cmp))
    page = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "w.json"), "--out", str(page)]) == 0
    html = page.read_text()
    assert "Sliding-window test" in html and "1 / 19" in html and "-0.2500" in html
    # one well-formed window test in the file: Holm of a zero p is zero, bounded by 1 × 2/50
    table = html[html.index("Sliding-window test"):].split("</table>")[0]
    assert table.count("<td>&lt; 0.04</td>") == 2 and "ndcg@10" not in table
