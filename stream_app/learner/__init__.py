"""The learner process: the stream teaches the served model (``seqstream learner``).

- :mod:`stream_app.learner.driver`: :class:`StreamLearner`, Kafka-free: events in, the model
  updated by :class:`model_core.learn.OnlineLearner` on its schedule, versions published
  through the validation gate (:mod:`model_core.learn.gate`: a version that does worse on
  events it has not learned is not published; the offline replay runs the same gate);
- :mod:`stream_app.learner.versions`: the published versions in the workers' watched
  directory (the existing hot swap), the last M kept, rollback;
- :mod:`stream_app.learner.pace`: what the learner does when it falls behind the stream;
- :mod:`stream_app.learner.service`: the Kafka loop around the driver (its own consumer
  group on the events topic, offsets committed once a version holding them is published).
"""
