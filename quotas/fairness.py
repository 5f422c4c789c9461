"""Fair order within a relax lane: by each member's GPU use this period and by waiting time, not first-in-first-out.

Relax jobs are enqueued on RQ's `relax:<model>` queue like any job; before a worker takes a job, `order` rewrites the
head of that queue (one Lua script, so it is atomic against RQ's pops and pushes) into fair order. Jobs never leave
RQ: cancelling, positions, retries and a worker that skips `order` keep working, and an idle worker blocked on the
queue still gets a new job at once. Fast before relax is unchanged: RQ's worker takes `fast:<model>` first.

The order is a fair queue over members, by use. A member is a Discord user, whichever servers their jobs come from
(the lane is shared by every server the bot serves, so use in one server counts in all). A member's score is

    score = usage this period (every server) + estimates of their relax jobs running now
            - WAIT_CREDIT * (now - admission of head)

and the member with the lowest score gives the next job (their oldest waiting one); that job's estimate is added to
their score before the next pick, so a member's burst of 20 jobs runs interleaved with everybody else's: another
member's single job waits for at most the one job the burst's owner was due (`tests/core/test_fairness.py`). Waiting
earns credit slowly (WAIT_CREDIT), so that use dominates, as in Midjourney, yet nobody starves: a member who used
100 GPU-seconds more than a newcomer goes first once their job has waited 1000 s longer.
A member at their tier's running-relax cap goes after everybody else
(work-conserving: the GPU never idles to enforce a cap). Jobs without a reservation (CLI jobs) count as one member
each, with the default estimate.

Redis: one Redis, not a cluster: the script reads the keys its jobs' reservations name.
"""

from __future__ import annotations

import redis
from rq import Queue

import quotas.ledger as ledger
from core import keys

WAIT_CREDIT = 0.1
"""GPU-seconds of use forgiven per second a member's oldest relax job has waited. At 1.0 a burst's head, waiting
since the burst came, would out-wait every later member (`python -m bench fairness` showed light members waiting
behind 21 of a burst's jobs); at 0.1 they wait behind none, and a heavy user's starvation is still bounded."""

MAX_ORDERED = 2000
"""Only the first jobs of a queue are reordered (the script blocks Redis while it runs; ~1 ms per 100 jobs)."""

CAPPED_PENALTY_S = 1e12
"""Added to the score of a member at their running-relax cap: they go after everybody else."""

# KEYS: the RQ queue list. ARGV: now, wait credit, max ordered, job key template, reservation key template,
# default estimate, capped penalty, the users' usage key template (`keys.user_usage`; the period comes from the
# reservation's guild usage key). Returns 1 when it changed the order, else 0.
_ORDER = """
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
if #ids < 2 then return 0 end
local now, credit, penalty = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local function job_key(id) return string.format(ARGV[4], id) end
local function res_key(id) return string.format(ARGV[5], id) end
local members, names = {}, {}
for index, id in ipairs(ids) do
  local r = redis.call('HMGET', res_key(id), 'member', 'estimate_s', 'admitted_at', 'usage_key', 'active_key',
    'relax_cap')
  local name = r[1] and string.match(r[1], ':(.+)$')  -- the Discord user: one fair share across servers
  if not name then
    name = 'job:' .. id
    r = {name, ARGV[6], redis.call('HGET', job_key(id), 'created_at') or ARGV[1], false, false, false}
  end
  local m = members[name]
  if not m then
    local period = r[4] and string.match(r[4], ':(%d+)$')
    m = {jobs = {}, head = 1, usage_key = period and string.format(ARGV[8], period), actives = {}}
    members[name] = m
    table.insert(names, name)
  end
  if r[5] then m.actives[r[5]] = tonumber(r[6]) or 0 end
  table.insert(m.jobs, {id = id, est = tonumber(r[2]) or tonumber(ARGV[6]), at = tonumber(r[3]) or now, index = index})
end
for _, name in ipairs(names) do
  local m = members[name]
  local base = 0
  if m.usage_key then base = tonumber(redis.call('ZSCORE', m.usage_key, name)) or 0 end
  local capped = false
  for active_key, cap in pairs(m.actives) do
    local running = 0
    local active = redis.call('HGETALL', active_key)
    for i = 1, #active, 2 do
      if active[i + 1] == 'relax' and redis.call('HGET', job_key(active[i]), 'state') == 'running' then
        running = running + 1
        base = base + (tonumber(redis.call('HGET', res_key(active[i]), 'estimate_s')) or 0)
      end
    end
    if cap > 0 and running >= cap then capped = true end
  end
  if capped then base = base + penalty end
  m.score = base
end
local ordered, changed = {}, false
for position = 1, #ids do
  local best, best_key = nil, nil
  for _, name in ipairs(names) do
    local m = members[name]
    local job = m.jobs[m.head]
    if job then
      local key = {m.score - credit * (now - job.at), job.at, job.index}
      if not best or key[1] < best_key[1] or (key[1] == best_key[1] and (key[2] < best_key[2] or
          (key[2] == best_key[2] and key[3] < best_key[3]))) then
        best, best_key = name, key
      end
    end
  end
  local m = members[best]
  local job = m.jobs[m.head]
  m.head = m.head + 1
  m.score = m.score + job.est
  ordered[position] = job.id
  if job.id ~= ids[position] then changed = true end
end
if not changed then return 0 end
redis.call('LTRIM', KEYS[1], #ids, -1)
for position = #ordered, 1, -1 do redis.call('LPUSH', KEYS[1], ordered[position]) end
return 1
"""


def order(conn: redis.Redis, queue_name: str, *, now: float) -> bool:
    """Put the head of RQ queue `queue_name` (a `relax:<model>` lane) into fair order, atomically.

    Args:
        conn: Redis client.
        queue_name: the RQ queue's name, e.g. `keys.queue_name(model, "relax")`.
        now: Unix time (waiting time is measured up to it).

    Returns:
        True when the order changed.

    Raises:
        redis.RedisError: Redis is unreachable (the queue is unchanged; RQ's order stands).
    """
    key = Queue.redis_queue_namespace_prefix + queue_name
    return bool(
        conn.eval(
            _ORDER,
            1,
            key,
            repr(now),
            WAIT_CREDIT,
            MAX_ORDERED,
            keys.job("%s"),
            keys.quota_reservation("%s"),
            ledger.JOB_OVERHEAD_S + ledger.DEFAULT_S_PER_MPX_STEP * ledger.mpx_steps(512, 512, 25),
            CAPPED_PENALTY_S,
            keys.user_usage("%s"),
        )
    )


def waiting(conn: redis.Redis, queue_name: str) -> list[str]:
    """The job ids waiting in RQ queue `queue_name`, next first (as a worker would take them now)."""
    key = Queue.redis_queue_namespace_prefix + queue_name
    return [i.decode() if isinstance(i, bytes) else str(i) for i in conn.lrange(key, 0, -1)]
