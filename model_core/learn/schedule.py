"""The learner's schedule: when it updates and how much, as one frozen record.

    LearnSchedule.parse("every=250,steps=1,replay=4096")

The schedule is counted in events, never in seconds, so a stream and an offline replay of the
same log update the model at the same events and can give the same figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from model_core.exceptions import ModelCoreError

#: The schedule ``seqstream learner``, ``demo --learn`` and ``bench --learner`` use when given
#: none: every field at its default (chosen on validation logs, see :class:`LearnSchedule`).
DEFAULT_SCHEDULE = "every=250"

#: How a new item's vector starts (neural models); see :class:`LearnSchedule`.
INITS = ("context", "prev", "mean", "random")


@dataclass(frozen=True)
class LearnSchedule:
    """When and how the online learner updates the model.

    ``every``: update after every N events of the stream (the events since the last update
    are the update's micro-batch). Neural models (GRU4Rec, SASRec) then take ``steps``
    gradient steps (Adam, ``lr``), each on up to ``batch_size`` sequences ending in the newest
    events plus ``replay_ratio`` times as many sequences drawn from a replay buffer of
    ``replay`` older sequences (reservoir sampling; 0 = no replay). Counting models add the
    micro-batch's counts and need none of these.

    ``dense_lr``: the learning rate of the parameters other than the item rows (the
    sequence encoder; 0 = ``lr``, all alike).

    ``settled``: how far, as a share of the optimiser's step, the parameters the model was
    trained with move: the sequence encoder (its learning rate, ``dense_lr`` or ``lr``, is
    multiplied by it) and the rows and output biases of the items it was trained on (their
    step is scaled by it). Items that got a row during the stream (born after training, or
    back in a reused slot) always take the whole step. 1 = all alike; 0 = only new items
    learn, so a stream without new items leaves the model as trained.

    ``max_items``: bound on the item table (0 = none). At the bound a new item takes the slot
    of the item not seen for the longest (see :mod:`model_core.learn.items`).

    ``init``: a new item's vector in a neural model (its input and, tied, its output row):

    - ``context`` (default): the model's own output vectors at the events just before the
      new item's occurrences in the update (the queries it should answer), each less
      ``1 - r`` times the update's mean output vector (r = the share of the update's next
      items born after training: the mean direction scores an item high after every
      history, and new items keep it only as far as they, as a group, are the next item);
      the row takes their mean direction, at the norm that makes the item score there as a
      true next item scores at the ``place`` quantile of the update's known next items;
      GRU4Rec's output bias starts at the known items' mean. An item never seen after
      another event of its user keeps the ``mean`` start;
    - ``prev``: the mean of the rows of the items that preceded its occurrences;
    - ``mean``: the mean of the existing item vectors, plus noise of 1 % of their spread so
      new items do not tie; ``random``: normal, the existing vectors' spread.

    ``new_lr``: an item born after training is *young* for its first ``young`` occurrences;
    each gradient step moves a young item's row (and output bias) ``new_lr`` times as far as
    the optimiser's own step (1 = no boost). ``seed`` seeds the replay draws, the noise and
    dropout. ``dropout``: 1 (default) = the steps run with the model's dropout, as its
    training did; 0 = without (cheaper: SASRec's dropout masks are about a third of its
    update time; BENCHMARKS.md "Online learning", session 9).

    The defaults, ``every=250`` (:data:`DEFAULT_SCHEDULE`) with ``steps=1, lr=0.001,
    new_lr=10, place=0.97`` (all parameters alike), were chosen on validation logs only —
    YooChoose-100k's training file cut at 0.84, the Taobao head log's second half, the
    drifting synthetic log — by a rule written before the runs (BENCHMARKS.md "Online
    learning", session 9): no worse than 0.003 HR@20 on the session log, significant gains on
    the others, and a learner at least 1.2 times as fast as the demo's free-running stream
    on two shared cores in two runs of ``seqstream bench --learner``. ``every`` matters most
    where new items come often: a new item gets its row only at the update after it first
    appears, and on the Taobao head log half of the repeats of new items come within 100
    events of their first occurrence; ``every=500, steps=2`` (the session-8 default, the same
    steps per event) gained about half as much there. ``steps=8, lr=0.005, settled=0.25,
    new_lr=1, place=0.9`` (at ``every=500``) gains more on the synthetic log and learns at
    about half the demo's stream there: a schedule for a learner with a core of its own.

    ``gate``: the validation gate (:mod:`model_core.learn.gate`): a new version serves (is
    published) only after it and the version serving were scored on the newest ``gate``
    events of the next micro-batch, which it has not learned, and only if its HR@K there is
    at least the served one's and the start version's minus ``margin``; 0 (the default) = off,
    every version serves at once. Off by default because it did not keep the 8-step GRU4Rec
    schedule from losing HR@20 on the YooChoose validation prefix (BENCHMARKS.md "Online
    learning").
    """

    every: int = 250
    steps: int = 1
    batch_size: int = 256
    lr: float = 1e-3
    dense_lr: float = 0.0
    settled: float = 1.0
    replay: int = 4096
    replay_ratio: float = 1.0
    max_items: int = 0
    init: str = "context"
    place: float = 0.97
    grad_clip: float = 5.0
    seed: int = 0
    new_lr: float = 10.0
    young: int = 50
    gate: int = 0
    margin: float = 0.01
    dropout: int = 1

    def __post_init__(self) -> None:
        for name in ("every", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ModelCoreError(f"learn schedule: {name} must be at least 1, "
                                     f"got {getattr(self, name)}")
        for name in ("replay", "max_items", "gate"):
            if getattr(self, name) < 0:
                raise ModelCoreError(f"learn schedule: {name} must be 0 or more, "
                                     f"got {getattr(self, name)}")
        if self.dropout not in (0, 1):
            raise ModelCoreError(f"learn schedule: dropout is 1 (on) or 0 (off), "
                                 f"got {self.dropout}")
        if self.young < 0:
            raise ModelCoreError(f"learn schedule: young must be 0 or more, got {self.young}")
        if not 0.0 <= self.settled <= 1.0:
            raise ModelCoreError(f"learn schedule: settled is a share of the step in [0, 1], "
                                 f"got {self.settled}")
        if not 0.0 <= self.place <= 1.0:
            raise ModelCoreError(f"learn schedule: place is a quantile in [0, 1], "
                                 f"got {self.place}")
        if self.lr <= 0 or self.replay_ratio < 0 or self.new_lr <= 0 or self.margin < 0 \
                or self.dense_lr < 0:
            raise ModelCoreError("learn schedule: lr and new_lr must be > 0, replay_ratio, "
                                 "margin and dense_lr >= 0")
        if self.init not in INITS:
            raise ModelCoreError(f"learn schedule: init must be one of {', '.join(INITS)}, "
                                 f"got {self.init!r}")

    @classmethod
    def parse(cls, text: str) -> LearnSchedule:
        """``"every=250,steps=2"`` -> a schedule (unnamed fields keep their defaults; ``""``
        is the default schedule)."""
        types = {f.name: f.type for f in fields(cls)}
        kw: dict = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, eq, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in types:
                raise ModelCoreError(
                    f"--learn: {part!r} is not KEY=VALUE with KEY one of {', '.join(types)} "
                    "(e.g. every=250,steps=2)")
            conv = {"int": int, "float": float, "str": str}[str(types[key])]
            try:
                kw[key] = conv(value.strip())
            except ValueError:
                raise ModelCoreError(f"--learn: {key} must be {types[key]}, "
                                     f"got {value!r}") from None
        return cls(**kw)  # fields not named keep their defaults, ``every`` included

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["INITS", "LearnSchedule"]
