"""``seqstream bench``: streaming throughput and latency, side by side, in one invocation.

Every variant reads the same generated events from one input topic on one embedded broker,
each in a fresh child process (clean RSS and event loop) with its own consumer group and
output topic::

    raw            plain aiokafka consume -> produce loop (the ceiling of any Kafka app here)
    faust_naive    Faust agent, one ``await send`` + one table update per event
    faust_ceiling  Faust agent over ``take_events`` that does nothing (one send per batch)
    faust_ceiling_tb  the same over seqstream's ``take_batches`` (the batching the worker uses)
    seqstream_noop seqstream's own worker (``create_app`` + ``run_worker``) with a no-op model
    model_<name>   the model's batched ``predict_topk`` over the same sequences, no Kafka
    seqstream_<name>  ``seqstream worker --model CKPT`` (GRU4Rec, SASRec), full-catalogue top-K

Both Faust variants get ``faust.App`` options from :func:`stream_app.worker.app.app_options`, the
tuning seqstream itself runs with. The neural models are **randomly initialised** (throughput
does not depend on the weights) and saved as real checkpoints, so their runs are exactly
``seqstream worker --model DIR``.

Each Kafka variant runs two phases: (a) **max throughput**: it drains the pre-loaded events
(rate = outputs between its first and last output / the time between them); (b) **half
load**: the parent produces the next events paced at half that rate, and end-to-end latency
is output message time minus input send time. ``--json`` prints one JSON object on the last
line, with the ratios of seqstream against the other variants and their targets.

Modules:

- :mod:`.workload`: the generated events, the catalogue, the no-op model, pre-loading and
  paced sending;
- :mod:`.variants`: what each variant's child process runs (``python -m stream_app.ops.bench
  --child VARIANT``);
- :mod:`.outputs`: reading a variant's output topic into drain rate and latencies;
- :mod:`.process_stats`: peak RSS, CPU seconds and latency percentiles;
- :mod:`.runner`: the configuration, one run per variant, the summary;
- :mod:`.table`: the summary as lines and a Markdown table.
"""
