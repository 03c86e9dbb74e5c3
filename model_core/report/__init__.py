"""The offline evaluation report: results read and grouped (:mod:`.results`), plotted
(:mod:`.figures`) and written as one HTML page (:mod:`.page`); ``seqstream report RESULT.json
...`` is its command. Kafka-free: the online report of the metrics topic is
:mod:`stream_app.observe.report`."""
