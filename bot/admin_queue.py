"""`/admin queue`: jobs waiting per lane, jobs running, and the live workers with their models, read from RQ."""

from __future__ import annotations

import redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

from bot.members import mention
from core import jobs, keys, queue

MAX_RUNNING_SHOWN = 15
"""Running jobs listed by id (the count is always exact)."""

REFUSED_NAMES_SHOWN = 5
"""Function names of refused jobs listed, most refused first (the total is always exact)."""

REFUSED_NAME_SHOWN_CHARS = 60
"""A refused job's function name is the sender's choice: shown cut to this, without backticks."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def overview(conn: redis.Redis) -> str:
    """Waiting jobs per lane (RQ's queues), running jobs (their started registries), live workers (RQ's worker
    registry, with the model from each worker's stats hash)."""
    lanes: list[str] = []
    running: list[str] = []
    for rq_queue in sorted(Queue.all(connection=conn, serializer=queue.SERIALIZER), key=lambda q: q.name):
        if rq_queue.name.split(":", 1)[0] not in queue.LANES:
            continue
        # Read only: RQ's cleanup of abandoned jobs belongs to the workers, whose job class fails or retries them
        # and concludes their outcome (`worker.jobs`); run from here it would leave their records `running`.
        started = StartedJobRegistry(queue=rq_queue).get_job_ids(cleanup=False)
        lanes.append(f"`{rq_queue.name}`: {rq_queue.count} waiting, {len(started)} running")
        running += started
    lines = ["**Lanes**", *(lanes or ["none yet"]), f"**Running jobs** ({len(running)})"]
    for job_id in running[:MAX_RUNNING_SHOWN]:
        record = jobs.get(conn, job_id)
        lines.append(f"`{job_id}` {mention(record.owner)} ({record.spec.mode})" if record else f"`{job_id}`")
    workers = Worker.all(connection=conn, serializer=queue.SERIALIZER)
    lines.append(f"**Workers** ({len(workers)} live)")
    for worker in sorted(workers, key=lambda w: w.name):
        stats = {_text(k): _text(v) for k, v in conn.hgetall(keys.worker_stats(worker.name)).items()}
        job = worker.get_current_job_id()
        doing = f"running `{job}`" if job else worker.get_state()
        lines.append(
            f"`{worker.name}`: model {stats.get('model', '?')}, {doing}, {stats.get('jobs_done', '0')} jobs done"
        )
    lines.append(refused_line(conn))
    return "\n".join(lines)


def refused_line(conn: redis.Redis) -> str:
    """How many jobs workers refused to run because they named a function that is not one of this project's
    (`core.queue.JOB_FUNCTIONS`): someone wrote to Redis who should not have."""
    total = int(conn.get(keys.refused_jobs_total()) or 0)
    if not total:
        return "**Refused jobs:** none"
    counts = sorted(((int(n), _text(name)) for name, n in conn.hgetall(keys.refused_jobs()).items()), reverse=True)
    names = ", ".join(f"`{name.replace('`', '')[:REFUSED_NAME_SHOWN_CHARS]}` ({n})"
                      for n, name in counts[:REFUSED_NAMES_SHOWN])
    return (f"**Refused jobs:** {total} named a function that is not this bot's job function ({names}): something "
            "wrote to your Redis; check who can reach it")
