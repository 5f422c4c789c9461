"""`/admin queue`: jobs waiting per lane, jobs running, and the live workers with their models, read from RQ."""

from __future__ import annotations

import redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

from bot.members import mention
from core import jobs, keys, queue

MAX_RUNNING_SHOWN = 15
"""Running jobs listed by id (the count is always exact)."""


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
    return "\n".join(lines)
