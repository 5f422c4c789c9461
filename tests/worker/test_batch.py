"""Batching: the jobs a worker claims to share its sampler call, and what each job of a batch keeps as its own."""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
import redis
import torch
from PIL import Image
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry

import quotas
from core import images, jobs, keys, prompt, queue
from core.errors import JobCancelled
from core.models import ModelRegistry, tiny_model
from core.spec import JobSpec, PromptPart
from quotas import admission, ledger
from quotas.tiers import load_config
from tests.worker.worker_helpers import record, run_in_process
from worker import batch_render, claim
from worker.batch_render import Rows
from worker.engine import Engine
from worker.grid import encode_png

TIER = load_config().tiers["pro"]
MEMBER = ledger.member_id(1, 2)


def lanes(conn: redis.Redis) -> list:
    return [queue.rq_queue(conn, name) for name in queue.lane_names("tiny")]


def take(conn: redis.Redis, spec: JobSpec, limit: int, worker_name: str = "w", key: claim.BatchKey | None = None
         ) -> list[str]:
    found = claim.claim(conn, lanes(conn), key or claim.BatchKey.of(spec), limit=limit, worker_name=worker_name,
                        ttl_s=30, now=time.time())
    return [c.job_id for c in found]


def test_claim_takes_the_next_jobs_in_lane_order_and_stops_at_the_first_that_cannot_share(redis_conn, tiny_spec):
    """Fast before relax, in queue order; the first job of other steps (or size, or kind) ends the claim, so nothing is
    taken out of turn; claimed jobs are RQ-started by the claimer, and a second claimer gets none of them."""
    relax = dataclasses.replace(tiny_spec, mode="relax")
    fast_a = queue.enqueue(redis_conn, tiny_spec, "test:o")
    relax_b = queue.enqueue(redis_conn, dataclasses.replace(relax, seed=2, chaos=50, negative_prompt="dogs"), "t:o")
    relax_c = queue.enqueue(redis_conn, relax, "test:o")
    bigger = queue.enqueue(redis_conn, dataclasses.replace(relax, steps=relax.steps + 2), "test:o")
    after = queue.enqueue(redis_conn, relax, "test:o")
    assert take(redis_conn, tiny_spec, 10) == [fast_a, relax_b, relax_c]
    assert take(redis_conn, tiny_spec, 10, worker_name="other") == []  # `bigger` (more steps) is next: it cannot share
    assert queue.rq_queue(redis_conn, "relax:tiny").job_ids == [bigger, after]
    started = StartedJobRegistry("relax:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    assert set(started.get_job_ids(cleanup=False)) == {relax_b, relax_c}
    assert Job.fetch(relax_b, connection=redis_conn, serializer=queue.SERIALIZER).get_status() == "started"
    assert Job.fetch(relax_b, connection=redis_conn, serializer=queue.SERIALIZER).worker_name == "w"
    other_guidance = dataclasses.replace(tiny_spec, guidance_scale=tiny_spec.guidance_scale + 1)
    assert take(redis_conn, other_guidance, 10) == [] and queue.rq_queue(redis_conn, "relax:tiny").count == 2


def test_an_image_prompt_is_never_claimed_into_a_batch(redis_conn, tiny_spec):
    """A grid with image prompts starts from its images (image-to-image), so it never shares a text-to-image call:
    the claim stops at it, and it waits for a worker to take it alone."""
    (with_image,) = prompt.parse("https://cdn.discordapp.com/attachments/1/2/a.png a cat", ModelRegistry((
        tiny_model(),)))
    assert images.EXTRAS_KEY in with_image.extras
    pictured = queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, extras=with_image.extras), "test:o")
    plain = queue.enqueue(redis_conn, tiny_spec, "test:o")
    assert take(redis_conn, tiny_spec, 10) == []
    assert queue.rq_queue(redis_conn, "fast:tiny").job_ids == [pictured, plain]


def test_variations_of_one_strength_are_claimed_together_and_nothing_else_is(redis_conn, tiny_spec):
    """A variation claims the next variations of its strength (a source naming none is strong, as the worker reads
    it), whatever their source images; a subtle one, or a grid, ends the claim; a grid never claims a variation."""
    parent = {"job_id": jobs.new_job_id(), "index": 1}
    strong = [queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, seed=k), "test:o", kind="vary",
                            source={**parent, "index": k, **({"strength": "strong"} if k < 3 else {})})
              for k in (1, 2, 3)]
    subtle = queue.enqueue(redis_conn, tiny_spec, "test:o", kind="vary", source={**parent, "strength": "subtle"})
    grid = queue.enqueue(redis_conn, tiny_spec, "test:o")
    strong_key = claim.BatchKey.of(tiny_spec, "vary", "strong")
    assert strong_key == claim.BatchKey.of(tiny_spec, "vary", None) != claim.BatchKey.of(tiny_spec)
    assert take(redis_conn, tiny_spec, 10) == []  # a grid's claim stops at the first variation
    assert take(redis_conn, tiny_spec, 10, key=strong_key) == strong
    assert take(redis_conn, tiny_spec, 10, key=strong_key) == []  # the subtle one is next
    assert take(redis_conn, tiny_spec, 10, key=claim.BatchKey.of(tiny_spec, "vary", "subtle")) == [subtle]
    assert queue.rq_queue(redis_conn, "fast:tiny").job_ids == [grid]


def test_claim_follows_the_fair_relax_order(redis_conn, tiny_spec):
    """Claimed relax jobs are the head of the lane after `quotas.order_relax`: the ones the worker would run next."""
    spec = dataclasses.replace(tiny_spec, mode="relax")
    now = time.time()
    burst = _admit(redis_conn, spec, "1:10", 4, now, mode="relax")
    (single,) = _admit(redis_conn, spec, "1:11", 1, now + 1, mode="relax")
    quotas.order_relax(redis_conn, "relax:tiny", now=now + 2)
    assert take(redis_conn, spec, 3) == [burst[0], single, burst[1]]


def test_claimed_jobs_of_a_dead_claimer_are_retried_by_rq_cleanup(redis_conn, tiny_spec):
    """A worker that dies right after claiming leaves the jobs in RQ's started registry; once their TTL is past,
    RQ's registry cleanup (any worker's maintenance) puts them back on their lane with their retry spent."""
    first = queue.enqueue(redis_conn, tiny_spec, "test:o")
    found = claim.claim(redis_conn, lanes(redis_conn), claim.BatchKey.of(tiny_spec), limit=2, worker_name="dead",
                        ttl_s=1, now=time.time() - 10)  # as if its heartbeat TTL had passed long ago
    assert [c.job_id for c in found] == [first]
    StartedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER).cleanup()
    assert queue.rq_queue(redis_conn, "fast:tiny").job_ids == [first]
    assert record(redis_conn, first).state == "queued"


def test_waiting_grids_render_in_one_call_each_as_it_would_alone(redis_conn, tiny_engine: Engine, tiny_spec):
    """Three waiting grids (other prompts, seeds, chaos, negatives) share one call: each is done with the images a
    lone render of it makes, an equal share of the call's GPU time charged to its owner; one cancelled meanwhile
    ends cancelled and is refunded; a job with another --stop after them runs alone; RQ records each job finished."""
    specs = [tiny_spec,
             dataclasses.replace(tiny_spec, prompt="blue", parts=(PromptPart("a blue dog"),), seed=99, chaos=80),
             dataclasses.replace(tiny_spec, seed=5, negative_prompt="red"),
             dataclasses.replace(tiny_spec, stop=50)]
    ids = _admit(redis_conn, tiny_spec, "1:2", 4, time.time())
    for job_id, spec in zip(ids, specs, strict=True):
        queue.enqueue(redis_conn, spec, f"discord:{MEMBER}", job_id=job_id)
    jobs.request_cancel(redis_conn, ids[2], "changed my mind")  # seen at the batch's first step
    run_in_process(redis_conn, tiny_engine, batch_size=4)

    stats = redis_conn.hgetall(keys.worker_stats("test-worker"))
    assert (stats[b"batches"], stats[b"batched_jobs"], stats[b"jobs_done"]) == (b"1", b"3", b"3")
    done = [record(redis_conn, job_id) for job_id in ids]
    assert [r.state for r in done] == ["done", "done", "cancelled", "done"]
    assert done[2].reason == "changed my mind"
    for job_id, spec in zip(ids[:2], specs[:2], strict=True):
        alone = tiny_engine.render(spec)
        for k in range(4):
            stored = Image.open(io.BytesIO(redis_conn.get(keys.job_image(job_id, k))))  # type: ignore[arg-type]
            diff = np.abs(np.asarray(stored, dtype=float) - np.asarray(alone[k], dtype=float)).mean()
            assert diff < 2.0, (job_id, k, diff)  # float differences between batch sizes only
    assert done[0].gpu_s == pytest.approx(done[1].gpu_s) and done[0].gpu_s > 0
    assert (done[0].step, done[0].total) == (spec.steps, spec.steps)
    usage = ledger.usage(redis_conn, MEMBER, TIER, now=time.time(), policy=load_config().period)
    charged = sum(r.gpu_s for r in done if r.state == "done")
    assert usage.used_s == pytest.approx(charged, rel=1e-3) and usage.reserved_s == pytest.approx(0, abs=1e-9)
    finished = FinishedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    assert set(finished.get_job_ids()) == set(ids)


def test_waiting_variations_render_in_one_call_each_as_it_would_alone(redis_conn, tiny_engine: Engine, tiny_spec):
    """Three waiting subtle variations of two images of a grid share one image-to-image call: each is done with the
    images a lone variation of its source makes, an equal share of the call charged to its owner; a fourth, whose
    source is gone, fails alone with the reason a lone one gets, is not retried and is refunded."""
    parent = queue.enqueue(redis_conn, tiny_spec, "test:o")
    run_in_process(redis_conn, tiny_engine, batch_size=4)
    for index, colour in ((1, "white"), (3, "black")):  # sources far apart, so that a job given another's shows
        redis_conn.set(keys.job_image(parent, index), encode_png(Image.new("RGB", (64, 64), colour)))
    gone = jobs.new_job_id()
    sources = [(parent, 2), (parent, 4), (parent, 2), (gone, 1)]
    specs = [dataclasses.replace(tiny_spec, seed=s, prompt="v", parts=(PromptPart(p),))
             for s, p in ((7, "a red dog"), (8, "a blue cat"), (9, "a red dog"), (10, "a cat"))]
    ids = _admit(redis_conn, tiny_spec, "1:2", 4, time.time())
    for job_id, spec, (source, index) in zip(ids, specs, sources, strict=True):
        queue.enqueue(redis_conn, spec, f"discord:{MEMBER}", job_id=job_id, kind="vary",
                      source={"job_id": source, "index": index, "strength": "subtle"})
    run_in_process(redis_conn, tiny_engine, batch_size=4)

    stats = redis_conn.hgetall(keys.worker_stats("test-worker"))
    assert (stats[b"batches"], stats[b"batched_jobs"], stats[b"jobs_done"]) == (b"1", b"4", b"3")
    done = [record(redis_conn, job_id) for job_id in ids]
    assert [r.state for r in done] == ["done", "done", "done", "failed"]
    assert "expired" in done[3].reason and done[3].attempt == 1
    for job_id, spec, (source, index) in zip(ids[:3], specs[:3], sources[:3], strict=True):
        start = Image.open(io.BytesIO(redis_conn.get(keys.job_image(source, index - 1))))  # type: ignore[arg-type]
        alone = tiny_engine.image_to_image(spec, start, 0.4)
        for k in range(4):
            stored = Image.open(io.BytesIO(redis_conn.get(keys.job_image(job_id, k))))  # type: ignore[arg-type]
            diff = np.abs(np.asarray(stored, dtype=float) - np.asarray(alone[k], dtype=float)).mean()
            assert diff < 1.0, (job_id, k, diff)  # float differences only; from another job's source: ~3.5
    assert done[0].gpu_s == pytest.approx(done[1].gpu_s) and done[0].gpu_s > 0
    assert (done[0].step, done[0].total) == (1, 1)  # 40% of tiny_spec's 4 steps, floored
    usage = ledger.usage(redis_conn, MEMBER, TIER, now=time.time(), policy=load_config().period)
    charged = sum(r.gpu_s for r in done if r.state == "done")
    assert usage.used_s == pytest.approx(charged, rel=1e-3) and usage.reserved_s == pytest.approx(0, abs=1e-9)


def _admit(conn: redis.Redis, spec: JobSpec, member: str, n: int, now: float, mode: str = "fast") -> list[str]:
    """Admit `n` jobs of `spec` for `member` (guild:user); relax ones are also enqueued."""
    request = admission.AdmissionRequest(job_ids=tuple(jobs.new_job_id() for _ in range(n)), mode=mode,
                                         model=spec.model, width=spec.width, height=spec.height, steps=spec.steps,
                                         now=now)
    got = admission.admit(conn, member, TIER, request)
    if mode == "relax":
        for job_id in got.job_ids:
            queue.enqueue(conn, spec, f"discord:{member}", job_id=job_id)
    return list(got.job_ids)


def test_batch_out_of_memory_retries_its_jobs_in_smaller_batches(redis_conn, tiny_engine: Engine, tiny_spec,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """A batch that runs out of device memory fails each job's attempt (RQ retries each once, as for a lone job);
    the worker halves its batches from then on, so the retries fit: all three end done on their second attempt."""
    real, calls = batch_render._sample, []

    def out_of_memory_once(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_render, "_sample", out_of_memory_once)
    ids = [queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, seed=s), "test:o") for s in (1, 2, 3)]
    run_in_process(redis_conn, tiny_engine, batch_size=4)
    assert calls == [3]  # the retries ran alone (a batch of 3 halves to 1): not through the batch sampler
    assert [(record(redis_conn, j).state, record(redis_conn, j).attempt) for j in ids] == [("done", 2)] * 3


def test_each_job_of_a_call_gets_its_own_progress_previews_and_cancel(tiny_engine: Engine, tiny_spec):
    """In one call: each job's progress every step with a preview of its own rows; a job cancelled after its second
    step is told once and gets no images (the other still does); when every job is cancelled the call stops."""
    seen: dict[int, list] = {0: [], 1: []}
    dropped: list[int] = []
    other = dataclasses.replace(tiny_spec, seed=1234, chaos=100)
    rows = [Rows(tiny_spec, lambda d, t, p: seen[0].append((d, t, p)), None, lambda: dropped.append(0)),
            Rows(other, lambda d, t, p: seen[1].append((d, t, p)), lambda: len(seen[1]) >= 2,
                 lambda: dropped.append(1))]
    results = tiny_engine.render_batch(rows, preview_interval_s=0.0)
    steps = tiny_spec.steps
    assert [(d, t) for d, t, _ in seen[0]] == [(k, steps) for k in range(1, steps + 1)]
    assert [(d, t) for d, t, _ in seen[1]] == [(1, steps), (2, steps)] and dropped == [1]
    first, second = seen[0][0][2], seen[1][0][2]
    assert first.size == second.size == (16, 16) and first.tobytes() != second.tobytes()  # 2x2 of 8x8 latents
    assert isinstance(results[0], list) and len(results[0]) == 4 and results[1] is None
    with pytest.raises(JobCancelled):
        tiny_engine.render_batch([Rows(tiny_spec, should_cancel=lambda: True)] * 2)
