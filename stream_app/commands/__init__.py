"""One module per ``seqstream`` sub-command, each with ``register(subparsers)``."""
