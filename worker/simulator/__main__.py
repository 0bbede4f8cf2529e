"""``python -m worker.simulator --port 0 ...``: run the simulator as a subprocess (tests, demos)."""

from __future__ import annotations

import argparse
import sys

from worker.simulator.cli import add_arguments, run


def main() -> int:
    """Parse the simulator flags and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.simulator", description="Simulated Anthropic Messages API."
    )
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
