"""Claiming the waiting jobs that can share a sampler call with the one a worker just took (README, Batching).

A worker that dequeued a grid job (or a variation) claims up to `batch_size - 1` more: the jobs it would run next,
in lane order (the fast lane's head, then the relax lane's head, which `quotas.order_relax` put in fair order before
the dequeue), as long as each can share the call (`BatchKey`: grids with grids, variations of one strength with each
other). The first job that cannot ends the claim: nothing is taken out of turn, so a batch is exactly the worker's
next jobs. One Lua script pops them and registers them as started by this worker in RQ's StartedJobRegistry, so no
other worker can take them and, if this worker dies before it ran them, RQ's registry cleanup (any worker's
maintenance) retries them like any abandoned job (`worker.jobs.attempt_failed`). `register` then writes the rest of
RQ's execution records with RQ's own classes, as RQ does for the dequeued job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from core import keys
from core.spec import JobSpec

BATCHED_KINDS = ("grid", "vary")
"""The job kinds that are batched: text-to-image grids, and variations (image-to-image from each job's own source
image); a batch holds one kind. Upscales copy their parent's bytes (no sampler call); the other kinds run alone."""


@dataclass(frozen=True)
class BatchKey:
    """What jobs sharing one sampler call must have in common. Prompts, negative prompts, seeds and `--chaos` may
    differ (each job's rows get their own text embeddings and starting noise), and so may a variation's source
    image; guidance, `--tile`, `--stop`, the kind and a variation's strength may not: diffusers' pipelines take one
    guidance scale and one img2img strength per call (the strength sets which steps run), `--tile` switches the
    padding of every convolution, and `--stop` ends the denoising loop for all rows at once."""

    model: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    tile: bool
    stop: int
    kind: str = "grid"
    strength: str = ""  # a variation's strength name ("strong", "subtle"); "" for a grid

    @classmethod
    def of(cls, spec: JobSpec, kind: str = "grid", strength: str | None = None) -> BatchKey:
        return cls(spec.model, spec.width, spec.height, spec.steps, spec.guidance_scale, spec.tile, spec.stop, kind,
                   (strength or "strong") if kind == "vary" else "")


# KEYS: the lanes' RQ queue lists, fast first, then their StartedJobRegistry keys in the same order.
# ARGV: 1 how many to claim at most, 2 the job record key template, 3 RQ's job key prefix, 4 the registry score (the
#       claim's expiry), 5 the worker's name, 6-14 the BatchKey (model, width, height, steps, guidance, tile 0/1,
#       stop, kind, strength), then one execution id per job that may be claimed.
# Returns the claimed job ids, each followed by the index (1-based) of its lane. A job is claimed only when its
# record is a queued job of the same BatchKey (a variation's strength read from its source, "strong" when it names
# none, as the worker reads it), without image prompts (those start from their images, alone), and RQ still holds
# the job; the first one that is not ends the claim.
CLAIM_SCRIPT = """
local lanes = #KEYS / 2
local limit = tonumber(ARGV[1])
local claimed = {}
local function strength_of(source)
  local ok, src = pcall(cjson.decode, source or '{}')
  if not ok or type(src) ~= 'table' then return nil end
  if src.strength == nil or src.strength == cjson.null or src.strength == '' then return 'strong' end
  return src.strength
end
local function fits(id)
  local r = redis.call('HMGET', string.format(ARGV[2], id), 'state', 'kind', 'spec', 'source')
  if r[1] ~= 'queued' or r[2] ~= ARGV[13] or not r[3] then return false end
  if ARGV[13] == 'vary' and strength_of(r[4]) ~= ARGV[14] then return false end
  if redis.call('HEXISTS', ARGV[3] .. id, 'data') == 0 then return false end
  local ok, s = pcall(cjson.decode, r[3])
  if not ok or type(s) ~= 'table' then return false end
  if type(s.extras) == 'table' and s.extras.images ~= nil then return false end  -- image prompts: img2img, alone
  return s.model == ARGV[6] and s.width == tonumber(ARGV[7]) and s.height == tonumber(ARGV[8])
    and s.steps == tonumber(ARGV[9]) and type(s.guidance_scale) == 'number'
    and math.abs(s.guidance_scale - tonumber(ARGV[10])) < 1e-9
    and (s.tile == true) == (ARGV[11] == '1') and s.stop == tonumber(ARGV[12])
end
for lane = 1, lanes do
  while #claimed / 2 < limit do
    local id = redis.call('LINDEX', KEYS[lane], 0)
    if not id then break end
    if not fits(id) then return claimed end
    redis.call('LPOP', KEYS[lane])
    local execution = ARGV[15 + #claimed / 2]
    redis.call('ZADD', KEYS[lanes + lane], ARGV[4], id .. ':' .. execution)
    redis.call('HSET', ARGV[3] .. id, 'status', 'started', 'worker_name', ARGV[5])
    table.insert(claimed, id)
    table.insert(claimed, lane)
  end
end
return claimed
"""


@dataclass(frozen=True)
class Claimed:
    """One claimed job: its id, the queue it came from and the id of its RQ execution."""

    job_id: str
    queue: Queue
    execution_id: str


def claim(
    conn: redis.Redis, queues: list[Queue], key: BatchKey, *, limit: int, worker_name: str, ttl_s: int, now: float
) -> list[Claimed]:
    """Atomically take up to `limit` jobs from the heads of `queues` (in order) that share `key`, registered as
    started by `worker_name` for `ttl_s` (the job heartbeat renews them).

    Raises:
        redis.RedisError: Redis is unreachable (nothing was claimed, or all of it was).
    """
    if limit <= 0:
        return []
    execution_ids = [uuid.uuid4().hex for _ in range(limit)]
    registries = [StartedJobRegistry(q.name, connection=conn, serializer=q.serializer).key for q in queues]
    answer = conn.eval(
        CLAIM_SCRIPT, 2 * len(queues), *(q.key for q in queues), *registries,
        limit, keys.job("%s"), Job.redis_job_namespace_prefix, now + ttl_s, worker_name,
        key.model, key.width, key.height, key.steps, repr(float(key.guidance_scale)), int(key.tile), key.stop,
        key.kind, key.strength, *execution_ids,
    )  # fmt: skip
    items = [i.decode() if isinstance(i, bytes) else i for i in answer]  # type: ignore[union-attr]
    return [
        Claimed(str(items[k]), queues[int(items[k + 1]) - 1], execution_ids[k // 2]) for k in range(0, len(items), 2)
    ]


def register(job: Job, claimed: Claimed, *, worker_name: str, ttl_s: int, pipeline: redis.client.Pipeline
             ) -> Execution:
    """The rest of RQ's records of a claimed job's execution, as `Execution.create` writes them for a dequeued one
    (its hash, the job's execution registry, the worker's execution index), under the id the claim registered."""
    execution = Execution(id=claimed.execution_id, job_id=job.id, connection=job.connection, worker_name=worker_name)
    execution.save(ttl=ttl_s, pipeline=pipeline)
    ExecutionRegistry(job_id=job.id, connection=pipeline).add(execution=execution, ttl=ttl_s, pipeline=pipeline)
    job.started_job_registry.add_execution(execution, pipeline=pipeline, ttl=ttl_s, xx=False)
    pipeline.sadd(execution.worker_executions_key, execution.composite_key)
    pipeline.expire(execution.worker_executions_key, ttl_s + 60)
    job.prepare_for_execution(worker_name, pipeline=pipeline)
    return execution
