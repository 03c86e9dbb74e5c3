"""The learner process's Kafka-free parts: versions on the learner's schedule equal the offline
replay's, the last M kept and rolled back, the validation gate, the behind-the-stream policy,
and the worker's side (vocabulary maps through evicted slots, lockstep runs)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from model_core.checkpoint import load_model
from model_core.datasets.synth import generate
from model_core.learn import LearnSchedule, OnlineLearner
from model_core.models import create_model
from model_core.sequences import build_vocab, group_by_user
from model_core.vocab import ItemVocab
from schemas.exceptions import SeqstreamError
from stream_app.learner.driver import StreamLearner
from stream_app.learner.pace import LagPolicy, keep_event
from stream_app.learner.versions import VersionStore
from stream_app.worker.model_swap import (
    Lockstep,
    ModelSwapper,
    learner_evicted,
    vocab_map,
    vocab_tag,
)


def _markov(events):
    vocab = build_vocab(events)
    model = create_model("markov", vocab).fit(group_by_user(events, vocab))
    model.version = "markov-test"
    return model


@pytest.fixture(scope="module")
def log():
    return generate(3000, seed=5, change_at=0.6, new_items=40, born_from=0.4)


def _records(events, start=0):
    return [(ev, 0, start + i) for i, ev in enumerate(events)]


def test_versions_follow_the_schedule_and_equal_the_offline_learner(tmp_path, log):
    train, stream = log[:1500], log[1500:2700]
    store = VersionStore(tmp_path / "watch", keep=3)
    driver = StreamLearner(_markov(train), LearnSchedule(every=500), store)
    driver.warm(train)
    published = driver.offer(_records(stream[:700])) + driver.offer(_records(stream[700:], 700))
    assert published == ["markov-test+u1", "markov-test+u2"]
    assert store.latest() == "markov-test+u2" and len(driver.buf) == 200
    meta = store.meta("markov-test+u2")["learner"]
    assert meta["update"] == 2 and meta["events"] == 1000 and meta["through"] == {"0": 1000}
    assert driver.published_through == {0: 1000}
    # the same learner code offline, in one call: the published weights are its weights
    offline = OnlineLearner(_markov(train), LearnSchedule(every=500))
    offline.warm(train)
    offline.learn(stream[:1000])
    got = load_model(store.path("markov-test+u2"))
    assert got.version == offline.version == "markov-test+u2"
    assert list(got.vocab.item_ids(range(1, len(got.vocab)))) == \
        list(offline.model.vocab.item_ids(range(1, len(offline.model.vocab))))
    for name, arr in offline.model.state_arrays().items():
        assert np.array_equal(np.asarray(got.state_arrays()[name]), np.asarray(arr)), name
    born = set(meta["new_items"]) | set(store.meta("markov-test+u1")["learner"]["new_items"])
    assert born and born <= {ev.item_id for ev in stream[:1000]} - set(_markov(train).vocab._ids)


def test_keep_the_last_m_and_roll_back(tmp_path, log):
    store = VersionStore(tmp_path / "watch", keep=2)
    driver = StreamLearner(_markov(log[:1000]), LearnSchedule(every=200), store)
    driver.offer(_records(log[1000:1800]))
    assert store.versions() == ["markov-test+u3", "markov-test+u4"]
    assert store.rollback() == "markov-test+u3" and store.latest() == "markov-test+u3"
    with pytest.raises(SeqstreamError, match="oldest version kept"):
        store.rollback()
    with pytest.raises(SeqstreamError, match="no version 'nope'"):
        store.rollback("nope")
    # the running learner goes on from the rolled-back version, under new names
    assert driver.follow_rollback(load_model) == "markov-test+u3"
    assert driver.stats.rollbacks == 1
    assert driver.offer(_records(log[1800:2000], 800)) == ["markov-test+u3+u1"]
    assert store.versions() == ["markov-test+u4", "markov-test+u3+u1"]  # keep=2
    # a restart from a learner version goes on numbering where the name is free
    fresh = StreamLearner(load_model(store.path("markov-test+u3+u1")), LearnSchedule(every=200),
                          store)
    assert fresh.offer(_records(log[2000:2200], 1000)) == ["markov-test+u3+u2"]


def test_the_gate_refuses_a_worse_version_with_an_alert(tmp_path, log):
    alerts = []
    store = VersionStore(tmp_path / "watch")
    driver = StreamLearner(_markov(log[:1500]), LearnSchedule(every=300, gate=300, margin=0.01),
                           store, top_k=20, on_alert=alerts.append)
    driver.warm(log[:1500])
    assert driver.offer(_records(log[1500:1800])) == []  # u1 waits for events it has not seen
    assert driver.candidate is not None and driver.gate.held
    assert driver.offer(_records(log[1800:2100], 300)) == ["markov-test+u1"]
    gate = store.meta("markov-test+u1")["learner"]["gate"]
    assert gate["n"] > 100 and gate["candidate_hr"] >= gate["served_hr"] - 0.01
    # u2 is spoiled after learning: every transition forgotten, scores by popularity only
    m = driver.model
    m.indptr = np.zeros_like(m.indptr)
    m.indices, m.data = m.indices[:0], m.data[:0]
    assert driver.offer(_records(log[2100:2400], 600)) == []
    assert driver.stats.refused == 1 and store.latest() == "markov-test+u1"
    born2 = driver.candidate["learner"]["new_items"]
    (alert,) = alerts
    assert alert.metric == "learner_gate" and alert.new_level < alert.old_level - 0.01
    assert "not published" in alert.message and alert.model_version == "markov-test+u2"
    # refused: a marker (lockstep workers keep u1 for u2's events), no version directory
    assert not store.path("markov-test+u2").exists()
    assert Lockstep(300, "markov-test", store.dir, gated=True).refused(2)
    # learning goes on from u2 (u3 learns the next 300 events and its counts make up for
    # part of the loss); u3 passes against u1, named as its parent, with u2's new items
    assert driver.offer(_records(log[2400:2700], 900)) == ["markov-test+u3"]
    meta = store.meta("markov-test+u3")["learner"]
    assert meta["parent"] == "markov-test+u1" and set(born2) <= set(meta["new_items"])


def test_the_offline_replay_gates_as_the_stream_learner_does(tmp_path, log, monkeypatch):
    """The same gate code in both drivers: the versions that serve in the offline replay
    are those the stream learner publishes; a refused one never serves."""
    from model_core.learn.measure import replay_stream

    learn = OnlineLearner.update

    def spoiled_third(self):  # u3 forgets every transition after learning
        upd = learn(self)
        if self.n_updates == 3:
            m = self.model
            m.indptr = np.zeros_like(m.indptr)
            m.indices, m.data = m.indices[:0], m.data[:0]
        return upd

    monkeypatch.setattr(OnlineLearner, "update", spoiled_third)
    train, stream = log[:1500], log[1500:]
    schedule = LearnSchedule(every=250, gate=250, margin=0.01)
    store = VersionStore(tmp_path / "watch", keep=20)
    driver = StreamLearner(_markov(train), schedule, store, top_k=20)
    driver.warm(train)
    published = driver.offer(_records(stream))
    run = replay_stream(_markov(train), stream, train, OnlineLearner(_markov(train), schedule),
                        k=20, batch_size=97)
    assert run.versions == published and run.refused == driver.stats.refused >= 1
    assert "markov-test+u3" not in published and "markov-test+u2" in published
    # gate off: every version serves at once, the spoiled one included
    off = replay_stream(_markov(train), stream, train,
                        OnlineLearner(_markov(train), LearnSchedule(every=250, gate=0)), k=20)
    assert "markov-test+u3" in off.versions and off.refused == 0


def test_behind_the_stream_subsample_skip_and_alert_once(tmp_path, log):
    alerts = []
    driver = StreamLearner(_markov(log[:1000]), LearnSchedule(every=100),
                           VersionStore(tmp_path / "w"), pace=LagPolicy(1000, "subsample"),
                           on_alert=alerts.append)
    driver.offer(_records(log[1000:1400]), lag=500)
    assert driver.stats.skipped == 0 and not alerts
    driver.offer(_records(log[1400:1800], 400), lag=4000)  # a share of 1/4 is learned
    assert 0.6 < driver.stats.skipped / 400 < 0.9
    assert [a.metric for a in alerts] == ["learner_lag"] and alerts[0].new_level == 4000
    driver.offer(_records(log[1800:1900], 800), lag=5000)  # the same episode: no new alert
    driver.offer(_records(log[1900:2000], 900), lag=10)
    driver.offer(_records(log[2000:2100], 1000), lag=3000)  # a new episode
    assert len(alerts) == 2 and driver.pace.episodes == 2
    assert driver.stats.events_in == driver.stats.skipped + driver.stats.events_learned \
        + len(driver.buf)
    # skip: the service jumps to the end; the held events go with the jumped ones
    skip = LagPolicy(1000, "skip")
    assert skip.must_skip(1001) and not skip.must_skip(1000) and skip.share(5000) == 1.0
    before = driver.stats.skipped
    held = len(driver.buf)
    driver.skipped_to_end(5000, {0: 99_999})
    assert driver.stats.skipped == before + 5000 + held and driver.through[0] == 99_999
    assert keep_event("e1", 1.0) and keep_event("e1", 0.3) == keep_event("e1", 0.3)


def test_worker_maps_follow_new_and_evicted_slots():
    v0 = ItemVocab(["a", "b", "c"])
    v1 = copy.deepcopy(v0)
    v1.add("d")  # a new item
    v2 = copy.deepcopy(v1)
    v2.reassign(2, "e")  # "b" evicted, its slot reused
    assert vocab_map(v1, v2).tolist() == [0, 1, 0, 3, 4]
    sw = ModelSwapper(SimpleNamespace(model_path=None), SimpleNamespace(
        model=SimpleNamespace(vocab=v0, version="m")))
    sw.switch_vocab(v1)
    sw.switch_vocab(v2)
    from model_core.sequence_state import UserState

    st = UserState(items=np.array([1, 2, 3], np.int32), vocab_tag=vocab_tag(v0),
                   last_pred_items=np.array([2, 1], np.int32), last_pred_action=0)
    out = sw.adapt(st)  # composed v0 -> v1 -> v2: "b" is unknown now, not "e"
    assert out.items.tolist() == [1, 0, 3] and out.last_pred_items.tolist() == [0, 1]
    st1 = UserState(items=np.array([4, 2], np.int32), vocab_tag=vocab_tag(v1))
    assert sw.adapt(st1).items.tolist() == [4, 0]
    # "b" evicted and back within one update, at another slot: forgotten, as offline
    v3 = copy.deepcopy(v2)
    v3.reassign(1, "b")
    assert vocab_map(v1, v3).tolist()[2] == 1 and vocab_map(v1, v3, [2]).tolist()[2] == 0
    learned = SimpleNamespace(meta={"learner": {"parent": "m+u1", "evicted": [2]}})
    assert learner_evicted(learned, "m+u1") == [2] and learner_evicted(learned, "m") == []


def test_lockstep_runs_and_versions():
    lock = Lockstep(100, "m-1", "/w")
    assert lock.pieces([98, 99, 100, 101, 250]) == [(0, 2, 0), (2, 4, 1), (4, 5, 2)]
    assert lock.update_of("m-1") == 0 and lock.update_of("m-1+u7") == 7
    assert lock.update_of("other+u3") is None and lock.update_of("m-1+u3+u1") is None
    assert str(lock.path(3)).endswith("m-1+u3")
    m = SimpleNamespace(version="m")
    s = SimpleNamespace(learn_lockstep=0, model_watch_dir="/w")
    assert Lockstep.from_settings(s, m) is None
    s = SimpleNamespace(learn_lockstep=5, model_watch_dir="/w", learn_schedule="every=5")
    assert Lockstep.from_settings(s, m).every == 5 and not Lockstep.from_settings(s, m).gated
    # gated (the schedule's gate=N): version k scores the micro-batch after its window
    gated = Lockstep(100, "m-1", "/w", gated=True)
    assert gated.pieces([98, 99, 100, 101, 250]) == [(0, 2, -1), (2, 4, 0), (4, 5, 1)]


def test_health_and_metrics_pages(tmp_path, log):
    import json
    import urllib.error
    import urllib.request

    from stream_app.learner.probe import LearnerProbe

    driver = StreamLearner(_markov(log[:1000]), LearnSchedule(every=200),
                           VersionStore(tmp_path / "w"))
    driver.offer(_records(log[1000:1500]))
    probe = LearnerProbe(driver, stall_s=60)
    port = probe.serve("127.0.0.1", 0)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        assert get("/v1/live")[0] == 200
        code, body = get("/v1/ready")
        assert code == 503 and "no partitions" in json.loads(body)["reasons"][0]
        probe.turned(assigned=True)
        assert get("/v1/ready") == (200, json.dumps({"ready": True,
                                                      "version": "markov-test+u2"}))
        code, text = get("/metrics")
        assert code == 200 and "seqstream_learner_published_total 2.0" in text
        assert "seqstream_learner_events_in_total 500.0" in text
        assert 'seqstream_learner_info{version="markov-test+u2"} 1.0' in text
        probe.last_turn -= 120  # a wedged loop
        code, body = get("/v1/live")
        assert code == 503 and "has not turned for 120 s" in body
        assert get("/nope")[0] == 404
    finally:
        probe.close()


def test_pseudonymous_ids_in_the_learner(tmp_path, log):
    """As the workers: the learner's sequences are keyed by the users' keyed hashes."""
    from model_core.checkpoint import save_model
    from model_core.datasets.synth import write_jsonl
    from stream_app.learner.service import build_driver
    from stream_app.settings import Settings
    from stream_app.worker.privacy import Pseudonyms

    save_model(_markov(log[:500]), tmp_path / "ckpt")
    write_jsonl(log[:500], tmp_path / "train.jsonl")
    (tmp_path / "key").write_bytes(b"k" * 32)
    settings = Settings(model_path=str(tmp_path / "ckpt"), model_watch_dir=str(tmp_path / "w"),
                        learn_warm_path=str(tmp_path / "train.jsonl"),
                        pseudonym_key_file=str(tmp_path / "key"))
    users = build_driver(settings).learner.users
    hashed = Pseudonyms(b"k" * 32)
    assert set(users) == {hashed(ev.user_id) for ev in log[:500]}
    assert not set(users) & {ev.user_id for ev in log[:500]}


def test_k8s_learner_beside_the_workers():
    from pathlib import Path

    import yaml

    from stream_app.settings import Settings

    k8s = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
    docs = {d["kind"]: d for d in yaml.safe_load_all((k8s / "learner.yaml").read_text())}
    dep = docs["Deployment"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["learner"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    fields = {f"SEQSTREAM_{n.upper()}" for n in Settings.model_fields}
    assert set(env) <= fields and "SEQSTREAM_LEARN_SCHEDULE" in env
    LearnSchedule.parse(env["SEQSTREAM_LEARN_SCHEDULE"])
    # the probes and the scrape port name the port the learner's health server listens on
    port = int(env["SEQSTREAM_LEARN_WEB_PORT"])
    (named,) = [p for p in c["ports"] if p["containerPort"] == port]
    for probe, path in (("startupProbe", "/v1/live"), ("readinessProbe", "/v1/ready"),
                        ("livenessProbe", "/v1/live")):
        assert c[probe]["httpGet"] == {"path": path, "port": named["name"]}
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    watch = yaml.safe_load((k8s / "configmap.yaml").read_text())["data"][
        "SEQSTREAM_MODEL_WATCH_DIR"]
    sts = yaml.safe_load((k8s / "statefulset.yaml").read_text())

    def claim_at(spec: dict, container: dict) -> str:
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == watch]
        (vol,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        return vol["persistentVolumeClaim"]["claimName"]

    wspec = sts["spec"]["template"]["spec"]
    assert claim_at(dep["spec"]["template"]["spec"], c) == claim_at(wspec, wspec["containers"][0]) \
        == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_a_time_trigger_updates_with_fewer_events(tmp_path, log):
    now = [0.0]
    driver = StreamLearner(_markov(log[:1000]), LearnSchedule(every=1000),
                           VersionStore(tmp_path / "w"), interval_s=30, clock=lambda: now[0])
    assert driver.offer(_records(log[1000:1100])) == [] and len(driver.buf) == 100
    now[0] = 31.0
    assert driver.tick() == ["markov-test+u1"] and not driver.buf
    assert driver.store.meta("markov-test+u1")["learner"]["events"] == 100
    assert driver.tick() == []  # nothing held: no empty version


def test_learner_versions_and_rollback_commands(tmp_path, log, capsys, clean_env):
    import orjson

    from stream_app.cli import main

    watch = tmp_path / "w"
    StreamLearner(_markov(log[:1000]), LearnSchedule(every=100), VersionStore(watch)).offer(
        _records(log[1000:1300]))
    assert main(["learner", "versions", "--watch-dir", str(watch), "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["latest"] == "markov-test+u3" and [v["update"] for v in out["versions"]] == [1, 2, 3]
    assert main(["learner", "rollback", "--watch-dir", str(watch), "--to", "markov-test+u1"]) == 0
    assert VersionStore(watch).latest() == "markov-test+u1"
    assert main(["learner", "rollback", "--watch-dir", str(watch), "--to", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"seqstream learner: error: no version 'x' in {watch}; kept: "
                   "markov-test+u1, markov-test+u2, markov-test+u3"]


def test_an_erase_leaves_no_trace_in_the_learner_or_its_gate(tmp_path, log):
    """Sequence, held events and the gate's "learnt since served" set all drop the user."""
    driver = StreamLearner(_markov(log[:1500]), LearnSchedule(every=300, gate=300),
                           VersionStore(tmp_path / "watch"), top_k=20)
    driver.warm(log[:1500])
    assert driver.offer(_records(log[1500:1800])) == []  # u1 held by the gate
    later = {ev.user_id for ev in log[1870:]}
    gone = next(u for u in sorted(driver.gate.learnt_users)  # sorted: the same user each run
                if u in driver.learner.users and u in later)
    driver.offer(_records(log[1800:1850], 300))  # part of the next micro-batch, held
    held = sum(r[0].user_id == gone for r in driver.buf) + sum(
        ev.user_id == gone for ev in driver.learner.pending)
    # the records of the poll that held the request, not offered yet, go in the same call
    taken = _records(log[1850:1870] + [ev for ev in log[1870:] if ev.user_id == gone][:3], 350)
    in_poll = sum(r[0].user_id == gone for r in taken)
    assert in_poll and in_poll < len(taken)
    others = [r for r in taken if r[0].user_id != gone]
    assert driver.erase(gone, taken) == held + in_poll
    assert taken == others and driver.stats.erased_events == held + in_poll
    assert gone not in driver.learner.users and gone not in driver.gate.learnt_users
    assert not any(r[0].user_id == gone for r in driver.buf)
    assert not any(ev.user_id == gone for ev in driver.learner.pending)


def test_one_default_schedule_for_every_command():
    """``seqstream learner`` (its setting), ``demo --learn``, ``evaluate --learn`` and
    ``bench --learner`` start from the schedule the dataclass's defaults describe (each
    names it without importing torch, so they are checked here)."""
    from model_core.learn.schedule import DEFAULT_SCHEDULE
    from stream_app.cli import build_parser
    from stream_app.ops.bench_learner import DEFAULT_SCHEDULES
    from stream_app.settings import Settings

    assert LearnSchedule.parse(DEFAULT_SCHEDULE) == LearnSchedule()
    assert Settings.model_fields["learn_schedule"].default == DEFAULT_SCHEDULE
    assert build_parser().parse_args(["demo", "--learn"]).learn == DEFAULT_SCHEDULE
    assert build_parser().parse_args(["evaluate", "--data", "x", "--model", "gru4rec",
                                      "--learn"]).learn == DEFAULT_SCHEDULE
    assert DEFAULT_SCHEDULES[0] == DEFAULT_SCHEDULE
