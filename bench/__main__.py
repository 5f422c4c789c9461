"""`python -m bench NAME`: run one benchmark and print its figures as JSON on stdout."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    overhead = sub.add_parser("overhead", help="queue + warm worker vs direct generation, and batch vs sequential")
    overhead.add_argument("--runs", type=int, default=7, help="timed runs of each kind (after one warm-up)")
    overhead.add_argument("--prompt", default="a red circle on a blue background --seed 7")
    interactions = sub.add_parser("interactions", help="/imagine ack latency when N interactions arrive at once, "
                                  "the bot against a bare discord.py floor, each in its own process")
    interactions.add_argument("-n", "--count", type=int, default=200, help="interactions delivered at once")
    interactions.add_argument("--cpu-hog", type=int, default=0, metavar="N",
                              help="keep N cores busy (busy-looping processes) while measuring")
    fairness = sub.add_parser("fairness", help="fair relax order vs FIFO on a simulated mixed load (needs REDIS_URL)")
    fairness.add_argument("--gpus", type=int, default=1, help="simulated GPUs serving the relax lane")
    args = parser.parse_args(argv)

    if args.name == "overhead":
        from bench.overhead import run

        result = run(runs=args.runs, prompt=args.prompt)
    elif args.name == "interactions":
        from bench.interactions import run as run_interactions

        result = run_interactions(count=args.count, cpu_hog=args.cpu_hog)
    elif args.name == "fairness":
        from bench.fairness import run as run_fairness

        result = run_fairness(gpus=args.gpus)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
