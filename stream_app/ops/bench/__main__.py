"""Entry of the benchmark's child processes: ``python -m stream_app.ops.bench --child ...``."""

import sys

from stream_app.ops.bench.variants import child_main

if len(sys.argv) > 1 and sys.argv[1] == "--child":
    sys.exit(child_main(sys.argv[2:]))
sys.exit("use `seqstream bench` (this module's own entry runs benchmark children)")
