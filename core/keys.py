"""Every Redis key and queue name this project uses, in one place. All keys start with `imagine:`."""

PREFIX = "imagine"


def queue_name(model: str, mode: str) -> str:
    """The RQ queue (lane) for one model and mode: `fast:<model>`, `relax:<model>` (or `describe:<model>`)."""
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


def job_prompts(job_id: str) -> str:
    """String: JSON list of the four prompts a `/describe` job found, kept with its image's TTL."""
    return f"{PREFIX}:job:{job_id}:prompts"


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


def open_jobs() -> str:
    """Sorted set: id of a job that was put on a lane and is not final yet -> its created_at; the final transition
    takes it out (`core.jobs.finish`). `worker.lost` walks it for jobs RQ lost track of."""
    return f"{PREFIX}:jobs:open"


def lost_seen() -> str:
    """Hash: id of an open job that RQ had in no queue or registry -> Unix time `worker.lost` first saw it so."""
    return f"{PREFIX}:jobs:lost-seen"


def lost_sweep_cursor() -> str:
    """String: the created_at of the last open job the sweep for lost jobs read; the next sweep reads on from there."""
    return f"{PREFIX}:jobs:lost-sweep:cursor"


def lost_sweep_lock() -> str:
    """String, with a TTL: held by the worker sweeping for lost jobs, so that only one sweeps at a time."""
    return f"{PREFIX}:jobs:lost-sweep"


def job_final_delivered(job_id: str) -> str:
    """String: set once Discord confirmed the message with the job's outcome; nothing is sent for the job after it."""
    return f"{PREFIX}:job:{job_id}:delivered"


def job_channel_message(job_id: str) -> str:
    """String: id of the channel message the worker posted for the job once its interaction token was gone; a later
    attempt edits that message instead of posting another."""
    return f"{PREFIX}:job:{job_id}:channel-message"


def undelivered() -> str:
    """Sorted set: id of a final job whose outcome Discord did not confirm -> Unix time of its next delivery attempt
    (`worker.redelivery`); a job leaves it once delivered, or once it has nowhere left to go."""
    return f"{PREFIX}:undelivered"


def undelivered_tries() -> str:
    """Hash: job id -> delivery attempts the workers' maintenance made for an undelivered outcome (its backoff)."""
    return f"{PREFIX}:undelivered:tries"


def job_flagged(job_id: str) -> str:
    """String: JSON `{"action": "blur"|"withhold", "flagged": [image indices]}` of a job whose images the worker's
    safety check replaced (kept as long as its images); the result is posted as a spoiler when blurred."""
    return f"{PREFIX}:job:{job_id}:flagged"


# Tiers, quotas and fair relax ordering (core.tierstore, core.ledger, core.admission, core.fairness).
# A `member` is `<guild id>:<user id>`: balances and tiers are per guild; `period` is the period start (Unix s).


def tier_policy(guild: str) -> str:
    """String: JSON of a guild's tier policy (default tier, role -> tier map, limit overrides, /subscribe text)."""
    return f"{PREFIX}:guild:{guild}:tiers"


def tier_grant(member: str) -> str:
    """Hash: an admin's explicit tier for a member (`tier`, `expires_at`)."""
    return f"{PREFIX}:member:{member}:grant"


def banned(guild: str) -> str:
    """Hash: user id -> reason, for the guild's banned members."""
    return f"{PREFIX}:guild:{guild}:banned"


def quota_rate(member: str) -> str:
    """Sorted set: the member's recent requests scored by Unix time (the sliding rate-limit window)."""
    return f"{PREFIX}:member:{member}:rate"


def quota_active(member: str) -> str:
    """Hash: job id -> lane (`fast`/`relax`) of the member's admitted jobs whose outcome is not settled yet."""
    return f"{PREFIX}:member:{member}:active"


def quota_balance(member: str, period: int) -> str:
    """Hash: the member's `used_s` (fast), `relax_s`, `reserved_s` and `granted_s` in the period starting `period`."""
    return f"{PREFIX}:member:{member}:balance:{period}"


def quota_told(member: str, period: int) -> str:
    """String: present once the member was told their fast time ran out this period (they are told once)."""
    return f"{PREFIX}:member:{member}:told:{period}"


def quota_usage(guild: str, period: int) -> str:
    """Sorted set: member -> GPU-seconds used (both lanes) in the period: top users, and relax's fair order."""
    return f"{PREFIX}:guild:{guild}:usage:{period}"


def user_usage(period: int | str) -> str:
    """Sorted set: Discord user id -> GPU-seconds they used (both lanes) in the period, in every server together:
    relax's fair order counts a member's use wherever they made it."""
    return f"{PREFIX}:usage:{period}"


def quota_reservation(job_id: str) -> str:
    """Hash: what admission reserved for one job (member, lane, seconds, keys to settle); gone once settled."""
    return f"{PREFIX}:job:{job_id}:reservation"


def quota_reservations() -> str:
    """Sorted set: job ids with an unsettled reservation, scored by admission time (the settlement backstop)."""
    return f"{PREFIX}:reservations"


def quota_reconcile_cursor() -> str:
    """String: `<score> <job id>` of the last reservation the backstop read; it walks on from there, then wraps."""
    return f"{PREFIX}:reservations:cursor"


def job_work(job_id: str) -> str:
    """String: megapixel-steps the worker actually rendered for a job (its speed sample), for its image TTL."""
    return f"{PREFIX}:job:{job_id}:work"


def model_speed() -> str:
    """Hash: model name -> measured GPU-seconds per megapixel-step (moving average over settled jobs)."""
    return f"{PREFIX}:model-speed"


# Admin commands (core.audit).


def audit_log(guild: str) -> str:
    """List: the guild's admin actions as JSON, newest first, capped (`core.audit.MAX_ENTRIES`)."""
    return f"{PREFIX}:guild:{guild}:audit"


# Moderation (core.modstore); moderation events go to the admins' audit log (`audit_log`) too.


def moderation_policy(guild: str) -> str:
    """Hash: a guild's moderation settings (NSFW policy, flagged-image action, strikes, log channel) and `rev`, a
    random token replaced on every change to its lists (so cached compiled filters are rebuilt)."""
    return f"{PREFIX}:guild:{guild}:moderation"


def moderation_block(guild: str) -> str:
    """Set: words and phrases the guild's admins blocked, on top of the default list."""
    return f"{PREFIX}:guild:{guild}:moderation:block"


def moderation_unblock(guild: str) -> str:
    """Set: default-list entries the guild's admins removed."""
    return f"{PREFIX}:guild:{guild}:moderation:unblock"


def moderation_allow(guild: str) -> str:
    """Set: the guild's allow-list entries (a block match inside one is ignored), on top of the default allow list."""
    return f"{PREFIX}:guild:{guild}:moderation:allow"


def moderation_strikes(member: str) -> str:
    """Sorted set: the member's recent blocked prompts scored by Unix time (the strike window)."""
    return f"{PREFIX}:member:{member}:strikes"


def moderation_suspended(guild: str) -> str:
    """Hash: user id -> Unix time their suspension from the bot ends."""
    return f"{PREFIX}:guild:{guild}:suspended"


def safety_classifiers() -> str:
    """Hash: worker name -> JSON of the image safety classifier it runs and when it said so (`worker.safety`)."""
    return f"{PREFIX}:safety-classifiers"


def refused_jobs() -> str:
    """Hash: dotted function name -> how many RQ jobs naming it a worker refused to run (not in
    `core.queue.JOB_FUNCTIONS`); names are cut to `REFUSED_NAME_MAX_CHARS`."""
    return f"{PREFIX}:refused-jobs"


def refused_jobs_total() -> str:
    """String (integer): how many RQ jobs workers refused to run, all function names together."""
    return f"{PREFIX}:refused-jobs:total"


REFUSED_NAME_MAX_CHARS = 200
"""A refused job's function name is counted under at most this many characters (the name is the sender's choice)."""


# The web app (`web`) and the metrics it exports (`core.metrics`).


def user_gallery(user: str) -> str:
    """Sorted set: a user's job ids scored by creation time (Unix s), up to `core.userjobs.GALLERY_KEPT`: the web
    gallery pages and filters through all of them, where `user_jobs` keeps only the most recent few."""
    return f"{PREFIX}:user:{user}:gallery"


def job_thumb(job_id: str) -> str:
    """String: JPEG bytes of the job's grid made small for the web gallery (`web.gallery.thumbnail`), kept as long
    as the grid."""
    return f"{PREFIX}:job:{job_id}:thumb"


def job_mask(job_id: str) -> str:
    """String: PNG bytes of a Vary (Region) job's mask (white: repaint, black: keep), kept as long as its images."""
    return f"{PREFIX}:job:{job_id}:mask"


def metrics_counters() -> str:
    """Hash: `<metric>|<label>=<value>,...` -> count (float), for counters every process adds to (`core.metrics`)."""
    return f"{PREFIX}:metrics:counters"


def metrics_histogram(name: str) -> str:
    """Hash: `<labels>|<bucket index>`, `<labels>|sum` and `<labels>|count` of one histogram (`core.metrics`)."""
    return f"{PREFIX}:metrics:histogram:{name}"
