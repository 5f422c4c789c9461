"""`python -m bench NAME`: run one benchmark and print its figures as JSON on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    chaos = sub.add_parser("chaos", help="members' jobs while workers are killed, Redis restarts, Discord errs and the "
                           "gateway drops; every job counted (each part its own process)")
    chaos.add_argument("--jobs", type=int, default=200, help="job-making commands and clicks in all")
    chaos.add_argument("--members", type=int, default=20, help="members acting at once")
    chaos.add_argument("--kill-every", type=float, default=20.0, metavar="S", help="SIGKILL a worker every S seconds")
    chaos.add_argument("--redis-restarts", type=int, default=2, help="Redis restarts from its AOF")
    chaos.add_argument("--gateway-drops", type=int, default=1)
    chaos.add_argument("--error-rate", type=float, default=0.1, help="fraction of Discord calls answered 429/5xx")
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep the processes' logs in DIR")
    mod = sub.add_parser("moderation", help="the prompt filter: misses and false positives on its table, time per "
                         "prompt, and time on adversarial texts of 1k, 10k and 100k characters")
    mod.add_argument("--repeat", type=int, default=5, help="runs of each timing; the best is reported")
    gallery = sub.add_parser("gallery", help="the web gallery of a member with N jobs: server time per request")
    gallery.add_argument("--jobs", type=int, default=1000, help="the member's jobs")
    gallery.add_argument("--runs", type=int, default=30, help="timed requests of each page (after one warm-up)")
    throughput = sub.add_parser("throughput", help="grids per minute batched vs one job at a time on a mixed load "
                                "through Redis and a warm worker, and an idle worker's single-job latency")
    throughput.add_argument("--jobs", type=int, default=40, help="jobs per round (enqueued at once)")
    throughput.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternating")
    throughput.add_argument("--batch-size", type=int, default=4, help="WORKER_BATCH_SIZE of the batched worker")
    throughput.add_argument("--idle-runs", type=int, default=5, help="single jobs timed on each idle worker")
    throughput.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the workers (0: torch's)")
    gpu = sub.add_parser("gpu", help="grid latency and throughput of SD 1.5, SDXL and SD-Turbo shaped pipelines "
                         "(random weights from bench/gpu_configs) on CUDA; on a CPU one step of each, shrunk")
    gpu.add_argument("--device", default="", help="torch device (default: cuda when available, else cpu)")
    gpu.add_argument("--sizes", default="512,1024", help="square image sides, comma-separated")
    gpu.add_argument("--batch", type=int, default=4, help="grids per batched call")
    gpu.add_argument("--compile", action="store_true", help="also time each pipeline with its UNet torch.compiled")
    gpu.add_argument("--steps", type=int, default=None, help="steps of every model (default: each config's own)")
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
    elif args.name == "moderation":
        from bench.moderation import run as run_moderation

        result = run_moderation(repeat=args.repeat)
    elif args.name == "chaos":
        from bench.chaos import ChaosConfig
        from bench.chaos import run as run_chaos

        config = ChaosConfig(args.jobs, args.members, args.kill_every, args.redis_restarts, args.gateway_drops,
                             args.error_rate, args.seed)  # fmt: skip
        result = run_chaos(config, keep=args.keep)
    elif args.name == "gallery":
        from bench.gallery import run as run_gallery

        result = run_gallery(jobs_count=args.jobs, runs=args.runs)
    elif args.name == "gpu":
        from bench.gpu import run as run_gpu

        sizes = tuple(int(side) for side in args.sizes.split(","))
        result = run_gpu(device=args.device, sizes=sizes, batch=args.batch, compile=args.compile, steps=args.steps)
    elif args.name == "throughput":
        from bench.throughput import run as run_throughput

        result = run_throughput(jobs_per_round=args.jobs, rounds=args.rounds, batch_size=args.batch_size,
                                idle_runs=args.idle_runs, threads=args.threads)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
