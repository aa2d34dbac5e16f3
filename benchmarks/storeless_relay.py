"""This tree's relay with no store attached: the fan-out baseline of store_bench.

Run from the repository root, with the arguments of ``mixer-console``::

    .venv/bin/python benchmarks/storeless_relay.py --no-ui --host 127.0.0.1

It is ``mixer-console`` exactly, except that the relay is built with no store:
histories stay in memory, as in the relay before the store existed, while every
later feature on the hot path (login, leases, metrics, the console's rates, the
cluster's hooks) runs as in this tree. The data directory is still opened and
locked, but nothing is written to it. store_bench compares the store against
this relay and against the last commit before the store, so that the store's
own cost is told apart from what the other features cost.
"""

import sys
from pathlib import Path
from typing import Any

# Run as a script, Python puts benchmarks/ first on the path: the relay's
# packages come from this tree.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixer_console import cli
from relay.build import build_relay
from relay.server import RelayServer


def build_storeless(settings: Any, store: Any, **options: Any) -> RelayServer:
    """build_relay, given no store whatever the command line opened."""
    return build_relay(settings, None, **options)


if __name__ == "__main__":
    cli.build_relay = build_storeless
    sys.exit(cli.main(sys.argv[1:]))
