"""Online learning: the model learns from the event stream, new items included.

- :mod:`model_core.learn.schedule`: :class:`LearnSchedule`, when and how much to learn;
- :mod:`model_core.learn.learner`: :class:`OnlineLearner`, the update itself (Kafka-free; a
  stream process and the offline replay drive the same object);
- :mod:`model_core.learn.gate`: the validation gate (which version serves: the stream
  learner and the offline replay run it alike);
- :mod:`model_core.learn.items`: the growing, bounded item table;
- :mod:`model_core.learn.replay`: the reservoir of older sequences replayed against forgetting;
- :mod:`model_core.learn.measure`: frozen vs online on the same prequential replay.
"""

from model_core.learn.learner import (
    INCREMENTAL,
    LEARNABLE,
    OnlineLearner,
    Update,
    check_learnable,
)
from model_core.learn.measure import compare_learning, replay_stream
from model_core.learn.schedule import LearnSchedule

__all__ = ["INCREMENTAL", "LEARNABLE", "LearnSchedule", "OnlineLearner", "Update",
           "check_learnable", "compare_learning", "replay_stream"]
