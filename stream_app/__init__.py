"""The Kafka-facing side of seqstream: Faust app, agents, online metrics, replay, broker, CLI."""
