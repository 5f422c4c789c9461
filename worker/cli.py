"""`imagine`: render a prompt from the command line, through Redis and a worker (or in-process with `--local`).

    imagine --explain "a cat --ar 16:9"     print the parsed job specs as JSON
    imagine --explain "a cat --wide" --option wide="--ar 16:9" --suffix "--s 250"
                                            custom options and a suffix, as `/prefer` saves them
    imagine "a cat --seed 7" --out cat.png  enqueue, wait for a worker, write the 2x2 grid

Exit status: 0 done; 1 generation failed, timed out, or Redis unreachable; 2 bad prompt or usage; 130 Ctrl-C (the
jobs are cancelled). A prompt that makes several jobs (`{a, b}` permutations, `--repeat`) writes grid.png,
grid-2.png, ...
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import redis
from tqdm import tqdm

from core import jobs, keys, prompt, queue
from core.errors import ImagineError, PromptError
from core.models import ModelRegistry
from core.preferences import MAX_SUFFIX_CHARS, Preferences, check_text
from core.settings import JobSettings, ModelSettings, RedisSettings, WorkerSettings
from core.spec import JobSpec

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_TIMEOUT_S = 600.0
"""How long `imagine` waits for all its jobs by default."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit 2 (argparse would print the usage first)."""
        self.exit(EXIT_USAGE, f"imagine: {message} (see imagine --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="imagine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", help="the prompt, with its --parameters, quoted as one argument")
    parser.add_argument("--explain", action="store_true", help="print the parsed job specs as JSON and exit")
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="where to write the grid (PNG)")
    parser.add_argument("--local", action="store_true", help="render in this process: no Redis, no worker")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="give up after S s")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a custom --NAME that stands for VALUE (repeatable), as /prefer option set")
    parser.add_argument("--suffix", default="", help="text appended to the prompt, as /prefer suffix")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, not {args.timeout:g}")

    limits = JobSettings()
    try:
        registry = ModelSettings().registry()
        wanted = _preferences(args.option, args.suffix, registry)
        specs = prompt.parse(args.prompt, registry, max_jobs=limits.max_jobs_per_command,
                             max_chars=limits.max_prompt_chars, preferences=wanted)
    except (PromptError, ImagineError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    if args.explain:
        if wanted.expand(args.prompt) != args.prompt:
            _say(f"expanded: {wanted.expand(args.prompt)}")
        print(json.dumps([spec.to_dict() for spec in specs], indent=2))
        return EXIT_DONE

    outs = output_paths(args.out, len(specs))
    if len(specs) > 1:
        _say(f"{len(specs)} jobs: writing {', '.join(map(str, outs))}")
    try:
        if args.local:
            return _render_local(specs, registry, outs)
        return _render_queued(specs, outs, RedisSettings().redis_url, timeout_s=args.timeout)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")


def _preferences(options: list[str], suffix: str, registry: ModelRegistry) -> Preferences:
    """The `--option NAME=VALUE`s and `--suffix`, checked as `/prefer` checks them.

    Raises:
        PromptError: one is malformed.
    """
    saved: dict[str, str] = {}
    for option in options:
        name, equals, value = option.partition("=")
        if not equals:
            raise PromptError(f"--option takes NAME=VALUE, not {option[:40]!r}")
        name, value = prompt.check_option(name, value, registry)
        saved[name] = value
    return Preferences(check_text("the suffix", suffix, MAX_SUFFIX_CHARS), saved)


def output_paths(out: Path, count: int) -> list[Path]:
    """`out` for the first job, then `stem-2.suffix`, `stem-3.suffix`, ..."""
    return [out if i == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, count + 1)]


def _render_queued(specs: list[JobSpec], outs: list[Path], url: str, *, timeout_s: float) -> int:
    """Enqueue every job, then wait for each with a progress bar and write its grid."""
    conn = redis.Redis.from_url(url)
    where = queue.redis_location(url)
    job_ids: list[str] = []
    try:
        conn.ping()
        owner = f"cli:{getpass.getuser()}"
        job_ids = [queue.enqueue(conn, spec, owner) for spec in specs]
        return _collect(conn, job_ids, specs, outs, timeout_s)
    except redis.RedisError as exc:
        return _fail(EXIT_FAILED, f"cannot reach Redis at {where} (REDIS_URL): {_first_line(exc)}")
    except KeyboardInterrupt:
        _cancel_all(conn, job_ids)
        return _fail(EXIT_INTERRUPTED, f"interrupted: cancelled {len(job_ids)} job(s)")
    finally:
        conn.close()


def _collect(conn: redis.Redis, job_ids: list[str], specs: list[JobSpec], outs: list[Path], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    status = EXIT_DONE
    for n, (job_id, spec, out) in enumerate(zip(job_ids, specs, outs, strict=True), start=1):
        label = f"job {n}/{len(job_ids)}" if len(job_ids) > 1 else "imagine"
        try:
            record = _wait_with_bar(conn, job_id, spec, label, deadline - time.monotonic())
        except TimeoutError:
            _cancel_all(conn, job_ids[n - 1 :])
            return _fail(EXIT_FAILED, f"timed out after {timeout_s:g} s waiting for a worker; cancelled the rest")
        if record.state != jobs.DONE:
            _say(f"job {job_id} {record.state}: {record.reason or 'no reason given'}")
            status = EXIT_FAILED
            continue
        grid = conn.get(keys.job_grid(job_id))
        if not isinstance(grid, bytes):
            _say(f"job {job_id} is done but its grid has expired")
            status = EXIT_FAILED
            continue
        out.write_bytes(grid)
        print(out)
    return status


def _wait_with_bar(conn: redis.Redis, job_id: str, spec: JobSpec, label: str, timeout_s: float) -> jobs.JobRecord:
    ahead = queue.position(conn, job_id)
    with tqdm(total=spec.steps, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        bar.set_postfix_str(f"queued, {ahead} ahead" if ahead else "queued")

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "progress":
                bar.total = int(event["total"])
                bar.n = int(event["step"])
                bar.set_postfix_str("rendering")
            elif event.get("type") == "state":
                bar.set_postfix_str(str(event.get("state")))

        record = jobs.wait(conn, job_id, timeout_s=max(timeout_s, 0.001), on_event=on_event)
        if record.state == jobs.DONE:
            bar.n = bar.total or 0
        bar.set_postfix_str(record.state)
    return record


def _render_local(specs: list[JobSpec], registry: ModelRegistry, outs: list[Path]) -> int:
    """Render in this process, loading each model once.

    The worker side is imported by name, here only: the contract package does not depend on torch otherwise.
    """
    engine_module = importlib.import_module("worker.engine")
    grid_module = importlib.import_module("worker.grid")
    device = WorkerSettings().device
    engines: dict[str, Any] = {}
    for n, (spec, out) in enumerate(zip(specs, outs, strict=True), start=1):
        info = registry.get(spec.model)
        if info is None:  # the parser only makes specs of registered models
            return _fail(EXIT_FAILED, f"model {spec.model!r} is not in the registry")
        label = f"job {n}/{len(specs)}" if len(specs) > 1 else "imagine"
        try:
            if info.name not in engines:
                engines[info.name] = engine_module.Engine.load(info, device=device)
            engine = engines[info.name]
            with tqdm(total=spec.steps, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:

                def on_progress(step: int, total: int, preview: object, bar: tqdm = bar) -> None:
                    bar.total = total
                    bar.n = step
                    bar.refresh()

                images = engine.render(spec, on_progress=on_progress)
        except ImagineError as exc:
            return _fail(EXIT_FAILED, f"generation failed: {exc}")
        out.write_bytes(grid_module.encode_png(grid_module.compose_grid(images)))
        print(out)
    return EXIT_DONE


def _cancel_all(conn: redis.Redis, job_ids: list[str]) -> None:
    for job_id in job_ids:
        try:
            queue.cancel(conn, job_id, reason="cancelled from the command line")
        except (LookupError, redis.RedisError):
            pass


def _say(message: str) -> None:
    print(f"imagine: {message}", file=sys.stderr)


def _fail(code: int, message: str) -> int:
    _say(message)
    return code


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


if __name__ == "__main__":
    sys.exit(main())
