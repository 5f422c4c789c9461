"""Helpers shared by the quota tests: a small tier, requests for the tiny model, job records driven like a worker."""

from __future__ import annotations

import dataclasses
import time

import redis

import quotas
from core import jobs
from quotas import admission
from quotas.tiers import Tier, load_config
from tests.core.test_jobs import make_spec

STANDARD = load_config().tiers["standard"]


def tier(**changes: object) -> Tier:
    """The default standard tier with some limits changed."""
    return dataclasses.replace(STANDARD, **changes)  # type: ignore[arg-type]


def request(n: int = 1, *, mode: str = "fast", kind: str = "grid", now: float | None = None):
    """A request for `n` 512x512 25-step grids of the tiny model."""
    return admission.AdmissionRequest(
        job_ids=tuple(jobs.new_job_id() for _ in range(n)),
        mode=mode,  # type: ignore[arg-type]
        model="tiny",
        width=512,
        height=512,
        steps=25,
        kind=kind,
        now=time.time() if now is None else now,
    )


def create_jobs(conn: redis.Redis, admitted: admission.Admission, owner: str = "discord:1") -> None:
    """Record each admitted job as queued, in the lane admission chose."""
    for job_id in admitted.job_ids:
        jobs.create(conn, job_id, make_spec(mode=admitted.mode), owner)


def run(conn: redis.Redis, job_id: str, gpu_s: float, state: jobs.State = jobs.DONE, *, apply: bool = True) -> None:
    """One attempt as the worker makes it: running, GPU time measured, final state, then (unless `apply` is False:
    the worker died right after the transition) its outcome applied to the quota."""
    assert jobs.mark_running(conn, job_id, "w1")
    jobs.add_gpu_seconds(conn, job_id, gpu_s)
    assert jobs.finish(conn, job_id, state)
    if apply:
        quotas.apply_outcome(conn, job_id)
