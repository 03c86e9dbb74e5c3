"""The README's Python API example runs as written, on a log written here."""

from __future__ import annotations

import re
from pathlib import Path

from stream_app.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- python-api -->\s*```python\n(.*?)```", text, re.S)
    assert m, "the README lost its Python API example"
    return m.group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    t0 = 1_569_892_519_000
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    for u in range(40):
        for k in range(8):
            item = (u + k) % 20
            rows.append(f"{t0 + 3_600_000 * k + 60_000 * u},{u},"
                        f"{'transaction' if k == 7 else 'view'},{item},")
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "events.csv", "--format", "csv", "--columns",
                 '{"user_id":"visitorid","item_id":"itemid","timestamp":"timestamp",'
                 '"action":"event"}', "--time-unit", "ms", "--model", "markov",
                 "--out", "ckpt/", "--quiet"]) == 0
    capsys.readouterr()
    exec(compile(_example(), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "320 events, 0 bad lines"
    assert out[1].startswith("next: ['16'")  # after 14, 15 comes 16 in this log
    assert re.match(r"HR@10 \d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\] over \d+ cases", out[2])
