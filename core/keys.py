"""Every Redis key and queue name this project uses, in one place. All keys start with `imagine:`."""

PREFIX = "imagine"


def queue_name(model: str, mode: str) -> str:
    """The RQ queue (lane) for one model and mode: `fast:<model>` or `relax:<model>`."""
    return f"{mode}:{model}"


def job(job_id: str) -> str:
    """Hash: the job's state, spec, owner, timings and failure reason (the source of truth for its outcome)."""
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    """Pub/sub channel: progress and outcome events of one job."""
    return f"{PREFIX}:job:{job_id}:events"


def job_cancel(job_id: str) -> str:
    """String: present when the job's cancellation was requested."""
    return f"{PREFIX}:job:{job_id}:cancel"


def job_image(job_id: str, index: int) -> str:
    """String: PNG bytes of image `index` (0-3) of the job's grid, kept with a TTL for U/V buttons."""
    return f"{PREFIX}:job:{job_id}:image:{index}"


def job_grid(job_id: str) -> str:
    """String: PNG bytes of the job's 2x2 grid, kept with a TTL."""
    return f"{PREFIX}:job:{job_id}:grid"


def worker_stats(worker_name: str) -> str:
    """Hash: a worker process's model, pipeline load count and jobs done."""
    return f"{PREFIX}:worker:{worker_name}"


def job_delivery(job_id: str) -> str:
    """Hash: where the job's messages go in Discord (application, channel, user, message ids). No secrets."""
    return f"{PREFIX}:job:{job_id}:delivery"


def job_interaction_token(job_id: str) -> str:
    """String: the interaction token the worker edits the original response with; expires with the token."""
    return f"{PREFIX}:job:{job_id}:itoken"


def user_settings(user: str) -> str:
    """Hash: a user's saved mode and default parameters (mode, ar, stylize, model); `user` is the owner string."""
    return f"{PREFIX}:user:{user}:settings"


def user_jobs(user: str) -> str:
    """List: a user's job ids, newest first, trimmed to the most recent few; `user` is the owner string."""
    return f"{PREFIX}:user:{user}:jobs"
