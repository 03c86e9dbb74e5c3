"""The results a report compares, read from the JSON ``evaluate --json`` and ``compare --json``
print, checked, and grouped by the data they were measured on.

    files → load_result_file (one per file: its models, paired tests, provenance)
          → group_settings   (one Setting per data set, protocol and history exclusion: only
                              results measured alike are set side by side)

Three shapes are read: an ``evaluate --json`` object (one model), a two-model
``compare --json`` object (``model_a``, ``model_b``, ``a``, ``b``, ``paired``) and a
several-model one (``models``, ``results``, ``comparisons``). A file may hold the whole
printed output: the JSON is then its last non-empty line, as the commands print it.
Anything else — not JSON, a ``--learn`` result, a field of the wrong type — raises
:class:`ReportInputError` with one line naming the file and what is missing.

The paired tests keep the adjusted p-values ``compare`` computed (Holm over every comparison
and metric of the file); a two-model file carries none, so Holm is applied here over its
metrics (the same family rule: every test the file holds), and the Setting says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model_core.exceptions import ModelCoreError
from model_core.significance import holm


class ReportInputError(ModelCoreError):
    """A file given to the report is not an evaluate or compare result."""


@dataclass(frozen=True)
class ModelResult:
    """One model's figures (an ``EvaluationResult.to_dict()``) and where they came from."""

    label: str
    result: dict[str, Any]
    source: str  # the file
    provenance: dict[str, Any] | None


@dataclass(frozen=True)
class PairedTests:
    """A reference model against another on the same cases: ``{metric: {a, b, mean_diff,
    ci_low, ci_high, effect_size, p_value, p_adjusted, n}}``."""

    reference: str
    model: str
    tests: dict[str, dict[str, Any]]
    adjustment: str  # how p_adjusted was obtained, in words
    family_size: int  # tests adjusted together (the bound of a zero p-value scales with it)
    n_resamples: int | None
    source: str
    # prequential runs: the sliding-window test ({metric: {mean_diff, ci_low, ci_high,
    # p_value, p_holm?, windows, windows_a_better, windows_b_better}}), else empty
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows_family: int = 0  # window tests of the file, adjusted together


@dataclass
class ResultFile:
    source: str
    models: list[ModelResult]
    paired: list[PairedTests]
    provenance: dict[str, Any] | None


@dataclass
class Setting:
    """Results measured on the same data files, protocol and history exclusion: comparable
    with each other."""

    title: str
    protocol: str
    models: list[ModelResult] = field(default_factory=list)
    paired: list[PairedTests] = field(default_factory=list)
    sources: list[ResultFile] = field(default_factory=list)

    @property
    def k(self) -> int:
        """The largest cut-off every model of the setting reports."""
        common = set.intersection(*(set(m.result["ks"]) for m in self.models))
        if not common:
            raise ReportInputError(f"{self.title}: the results share no cut-off K (--ks); "
                                   "evaluate them with a common one")
        return max(common)

    @property
    def ks(self) -> list[int]:
        return sorted(set.intersection(*(set(m.result["ks"]) for m in self.models)))


# --------------------------------------------------------------------------- reading
HELP = "give the JSON line `seqstream evaluate --json` or `seqstream compare --json` prints"


def load_result_file(path: str | Path) -> ResultFile:
    """Read one result file (see the module docstring); :class:`ReportInputError` if it is
    not one."""
    src = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ReportInputError(f"{src}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ReportInputError(f"{src}: not a text file; {HELP}") from None
    obj = _parse(text, src)
    prov = obj.get("provenance")
    if prov is not None and not isinstance(prov, dict):
        raise ReportInputError(f"{src}: \"provenance\" is not an object")
    if "metrics" in obj:
        result = _check_result(obj, src, "the result")
        label = _label(_text(obj.get("model"), src, "model"), None)
        return ResultFile(src, [ModelResult(label, result, src, prov)], [], prov)
    n_boot = _resamples(prov)
    if all(k in obj for k in ("model_a", "model_b", "a", "b", "paired")):
        specs = [_text(obj["model_a"], src, "model_a"), _text(obj["model_b"], src, "model_b")]
        results = [_check_result(obj["a"], src, "\"a\""), _check_result(obj["b"], src, "\"b\"")]
        labels = _unique([_label(s, r.get("model")) for s, r in zip(specs, results, strict=True)])
        tests = _check_paired(obj["paired"], src, "\"paired\"")
        tested = [t for t in tests.values() if t["p_value"] is not None]
        for t in tests.values():
            t["p_adjusted"] = None
        for t, q in zip(tested, holm([t["p_value"] for t in tested]) if tested else [],
                        strict=True):
            t["p_adjusted"] = q
        paired = [PairedTests(labels[0], labels[1], tests,
                              "Holm over this file's metrics (adjusted by the report)",
                              len(tested), n_boot, src)]
        _adjust_windows(paired, [_windows(obj.get("paired_windows"))])
        return ResultFile(src, [ModelResult(lb, r, src, prov)
                                for lb, r in zip(labels, results, strict=True)], paired, prov)
    if all(k in obj for k in ("models", "results", "comparisons")):
        return _several(obj, src, prov, n_boot)
    if "frozen" in obj and "online" in obj:
        raise ReportInputError(f"{src}: an `evaluate --learn` result (frozen against online); "
                               "the report compares evaluate and compare results")
    raise ReportInputError(f"{src}: no \"metrics\" (evaluate) nor \"results\" / \"paired\" "
                           f"(compare); {HELP}")


def _parse(text: str, src: str) -> dict[str, Any]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ReportInputError(f"{src}: empty; {HELP}")
    for candidate in (text, lines[-1]):  # the JSON alone, or a command's whole output
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
        raise ReportInputError(f"{src}: JSON, but not an object; {HELP}")
    raise ReportInputError(f"{src}: not JSON (nor is its last line); {HELP}")


def _several(obj: dict, src: str, prov: dict | None, n_boot: int | None) -> ResultFile:
    specs, results = obj["models"], obj["results"]
    if not isinstance(specs, list) or not isinstance(results, list) or len(specs) != len(results):
        raise ReportInputError(f"{src}: \"models\" and \"results\" must be lists of one length")
    specs = [_text(s, src, "models[]") for s in specs]
    results = [_check_result(r, src, f"results[{i}]") for i, r in enumerate(results)]
    labels = _unique([_label(s, r.get("model")) for s, r in zip(specs, results, strict=True)])
    by_spec = dict(zip(specs, labels, strict=True))
    cmps = obj["comparisons"]
    if not isinstance(cmps, list):
        raise ReportInputError(f"{src}: \"comparisons\" is not a list")
    paired = []
    family = sum(len(c.get("paired") or {}) for c in cmps if isinstance(c, dict))
    for i, c in enumerate(cmps):
        where = f"comparisons[{i}]"
        if not isinstance(c, dict) or c.get("model") not in by_spec:
            raise ReportInputError(f"{src}: {where} names no model of \"models\"")
        tests = _check_paired(c.get("paired"), src, f"{where}.paired")
        for name, t in tests.items():
            t["p_adjusted"] = _number(t.get("p_holm"), src, f"{where}.paired.{name}.p_holm")
        method = str(obj.get("p_adjustment", "holm"))
        paired.append(PairedTests(by_spec[specs[0]], by_spec[c["model"]], tests,
                                  f"{method.title()} over every comparison and metric of "
                                  "the file (by compare)", family, n_boot, src))
    _adjust_windows(paired, [_windows(c.get("paired_windows")) for c in cmps])
    return ResultFile(src, [ModelResult(lb, r, src, prov)
                            for lb, r in zip(labels, results, strict=True)], paired, prov)


def _check_result(r: Any, src: str, where: str) -> dict[str, Any]:
    """The fields the report reads, with their types; a copy is not needed (read only)."""
    if not isinstance(r, dict):
        raise ReportInputError(f"{src}: {where} is not an object")
    for key in ("metrics", "ks"):
        if key not in r:
            raise ReportInputError(f"{src}: {where} has no \"{key}\"; {HELP}")
    ks = r["ks"]
    if (not isinstance(ks, list) or not ks
            or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks)):
        raise ReportInputError(f"{src}: {where}.ks is not a list of positive cut-offs")
    _numbers(r["metrics"], src, f"{where}.metrics")
    for name, ci in (r.get("ci") or {}).items():
        if not isinstance(ci, list) or len(ci) != 2:
            raise ReportInputError(f"{src}: {where}.ci.{name} is not [low, high]")
        for v in ci:
            _number(v, src, f"{where}.ci.{name}")
    _number(r.get("coverage"), src, f"{where}.coverage")
    for key in ("n_test_cases", "protocol"):
        if key not in r:
            raise ReportInputError(f"{src}: {where} has no \"{key}\"; {HELP}")
    if "cost" in r and r["cost"] is not None and not isinstance(r["cost"], dict):
        raise ReportInputError(f"{src}: {where}.cost is not an object")
    extra = r.get("extra") or {}
    if not isinstance(extra, dict):
        raise ReportInputError(f"{src}: {where}.extra is not an object")
    _check_segments(extra.get("segments"), src, f"{where}.extra.segments")
    return r


def _check_segments(seg: Any, src: str, where: str) -> None:
    if seg is None:
        return
    if not isinstance(seg, dict):
        raise ReportInputError(f"{src}: {where} is not an object")
    for kind, buckets in seg.items():
        if kind in ("k", "ranked_cases"):
            continue
        if not isinstance(buckets, dict):
            raise ReportInputError(f"{src}: {where}.{kind} is not an object")
        for label, b in buckets.items():
            if not isinstance(b, dict):
                raise ReportInputError(f"{src}: {where}.{kind}.{label} is not an object")
            for name, v in b.items():
                if isinstance(v, dict):
                    _numbers(v, src, f"{where}.{kind}.{label}.{name}")
                else:
                    _number(v, src, f"{where}.{kind}.{label}.{name}")


def _check_paired(p: Any, src: str, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(p, dict):
        raise ReportInputError(f"{src}: {where} is not an object of paired tests")
    out = {}
    for name, t in p.items():
        if not isinstance(t, dict):
            raise ReportInputError(f"{src}: {where}.{name} is not an object")
        for key in ("a", "b", "mean_diff", "ci_low", "ci_high", "p_value"):
            if key not in t:
                raise ReportInputError(f"{src}: {where}.{name} has no \"{key}\"")
        _numbers({k: v for k, v in t.items() if k != "p_adjusted"}, src, f"{where}.{name}")
        out[str(name)] = dict(t)
    return out


WINDOW_FIELDS = ("mean_diff", "ci_low", "ci_high", "p_value", "windows")


def _windows(pw: Any) -> dict[str, dict[str, Any]]:
    """The sliding-window tests a prequential compare adds, where they have the fields the
    page shows (an optional addition: anything else is left out, not an error)."""
    if not isinstance(pw, dict):
        return {}
    return {str(name): t for name, t in pw.items() if isinstance(t, dict) and all(
        isinstance(t.get(f), (int, float)) and not isinstance(t.get(f), bool)
        for f in WINDOW_FIELDS)}


def _adjust_windows(paired: list[PairedTests], windows: list[dict[str, dict]]) -> None:
    """Attach each comparison's window tests with ``p_adjusted``: compare's ``p_holm`` where
    every test has one, else Holm over the file's window tests, as for the paired tests."""
    tests = [t for w in windows for t in w.values()]
    have = all(isinstance(t.get("p_holm"), (int, float)) for t in tests)
    adjusted = [t["p_holm"] for t in tests] if have else holm([t["p_value"] for t in tests])
    for t, q in zip(tests, adjusted, strict=True):
        t["p_adjusted"] = q
    for i, (p, w) in enumerate(zip(paired, windows, strict=True)):
        paired[i] = replace(p, windows=w, windows_family=len(tests))


def _numbers(d: Any, src: str, where: str) -> None:
    if not isinstance(d, dict):
        raise ReportInputError(f"{src}: {where} is not an object")
    for name, v in d.items():
        _number(v, src, f"{where}.{name}")


def _number(v: Any, src: str, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportInputError(f"{src}: {where} is {json.dumps(v)[:40]}, not a number")
    return float(v) if math.isfinite(v) else None


def _text(v: Any, src: str, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ReportInputError(f"{src}: \"{where}\" is missing or not a name")
    return v


def _resamples(prov: dict | None) -> int | None:
    b = ((prov or {}).get("config") or {}).get("bootstrap")
    return b if isinstance(b, int) and not isinstance(b, bool) and b > 0 else None


def _label(spec: str, model_type: Any) -> str:
    """The name a reader knows: the model name, or ``type (checkpoint dir)``."""
    name = Path(spec.rstrip("/")).name or spec
    if isinstance(model_type, str) and model_type and model_type != spec:
        return f"{model_type} ({name})"
    return name


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lb in labels:
        seen[lb] = seen.get(lb, 0) + 1
        out.append(lb if seen[lb] == 1 else f"{lb} #{seen[lb]}")
    return out


# --------------------------------------------------------------------------- grouping
def group_settings(files: list[ResultFile]) -> list[Setting]:
    """One :class:`Setting` per (data files' hashes, protocol, history exclusion), in
    first-seen order; a label that two files give in one setting gets the file's name."""
    settings: dict[tuple, Setting] = {}
    for f in files:
        for m in f.models:
            key, title = _setting_key(m)
            s = settings.setdefault(key, Setting(title, str(m.result["protocol"])))
            s.models.append(m)
            if f not in s.sources:
                s.sources.append(f)
        for p in f.paired:
            key, _ = _setting_key(next(m for m in f.models if m.label == p.reference))
            settings[key].paired.append(p)
    for s in settings.values():
        counts: dict[str, int] = {}
        for m in s.models:
            counts[m.label] = counts.get(m.label, 0) + 1
        renamed = {}
        for i, m in enumerate(s.models):
            if counts[m.label] > 1:
                new = f"{m.label} [{Path(m.source).name}]"
                renamed[(m.source, m.label)] = new
                s.models[i] = ModelResult(new, m.result, m.source, m.provenance)
        s.paired = [PairedTests(renamed.get((p.source, p.reference), p.reference),
                                renamed.get((p.source, p.model), p.model), p.tests,
                                p.adjustment, p.family_size, p.n_resamples, p.source,
                                p.windows, p.windows_family)
                    for p in s.paired]
    return list(settings.values())


def _setting_key(m: ModelResult) -> tuple[tuple, str]:
    """Data hashes, protocol and history exclusion: results that differ in any of them
    measure different things."""
    protocol = str(m.result["protocol"])
    excluded = bool(m.result.get("exclude_history"))
    how = protocol + (", history excluded" if excluded else "")
    hashes = (m.provenance or {}).get("data_sha256")
    if not isinstance(hashes, dict) or not hashes:
        return ("unknown data", protocol, excluded), f"data not recorded — {how}"
    names = ", ".join(Path(str(p)).name for p in hashes)
    return (tuple(sorted(str(h) for h in hashes.values())), protocol, excluded), f"{names} — {how}"
