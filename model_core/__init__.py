"""Models, training, evaluation and checkpoints. Runs without Kafka (imports ``schemas`` at most)."""
