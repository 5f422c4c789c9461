"""Quotas: tiers, GPU-second balances, admission, and fair relax order. This module is the whole API.

    member = quotas.Who(guild, user, role_ids)
    admitted = quotas.reserve(conn, config, member, specs)   # before enqueueing: all of a command's jobs, or none
    quotas.record_work(conn, job_id, mpx_steps, ttl_s=...)   # the worker: what the job actually rendered
    quotas.apply_outcome(conn, job_id)                       # by whoever made the job final: settle or refund
    quotas.release_unqueued(conn, job_ids)                   # jobs admitted but never queued
    except quotas.AdmissionUnanswered as lost:               # from reserve: the script may have run unseen
        quotas.release_when_back(conn, lost.job_ids)         # (blocking: in a thread) once Redis answers

An asyncio caller runs the same admission without a thread: `reserve_reads` (commands to pipeline), `plan_reserve`
(pure: the script's call), then `ADMIT_SCRIPT` with the call's keys and args, and `call.result(answer)`.

Reservations are exactly-once: a job's outcome settles (its measured GPU time) or refunds (failed, cancelled) its
reservation once, whoever calls `apply_outcome` first. Nothing here reacts to a job's outcome by itself: the process
that made the transition calls `apply_outcome` next (the worker's `worker.jobs.conclude`, the bot after a cancel), and
`reconcile` is the backstop for a process that died between a job's final transition and its settlement. Relax
lanes are put in fair order by `order_relax` before each dequeue.

Behind this module (private to the package): `tiers` (the pure rules: tiers file, resolution, periods),
`tierstore` (a guild's policy and admins' grants in Redis), `admission` (the one atomic admission step), `ledger`
(balances, settle, refund), `fairness` (relax order) and `members` (the member-facing texts and checks). Code
outside `quotas/` imports only `quotas` (a test keeps it so).
"""

from quotas.admission import (
    ADMIT_SCRIPT,
    Admission,
    AdmissionRequest,
    AdmissionUnanswered,
    AdmitCall,
    Render,
    admit,
    ban,
    ban_reason,
    bans,
    moved_to_relax_text,
    unban,
)
from quotas.fairness import order as order_relax
from quotas.ledger import (
    Usage,
    apply_outcome,
    grant,
    member_id,
    reconcile,
    reconcile_member,
    record_work,
    refund,
    reset,
    settle,
    top_users,
    usage,
)
from quotas.members import (
    DM_GUILD,
    DM_REFUSAL,
    RELEASE_RECHECK_S,
    RELEASE_RETRY_FOR_S,
    RELEASE_RETRY_S,
    Who,
    assignment,
    check_mode,
    check_place,
    check_stealth,
    date,
    minutes,
    plan_reserve,
    release_unqueued,
    release_when_back,
    render_of,
    reserve,
    reserve_reads,
    source_text,
    subscribe_text,
    tier_lines,
)
from quotas.tiers import (
    Assignment,
    Grant,
    GuildPolicy,
    PeriodPolicy,
    Tier,
    TiersConfig,
    TierSettings,
    apply_policy,
    load_config,
)
from quotas.tierstore import clear_grant, effective_config, grants, load_policy, set_grant, update_policy

__all__ = [
    "Admission", "AdmissionRequest", "AdmissionUnanswered", "admit", "ADMIT_SCRIPT", "AdmitCall", "apply_outcome",
    "apply_policy", "Assignment", "assignment", "ban", "ban_reason", "bans", "check_mode", "check_place",
    "check_stealth", "clear_grant", "date", "DM_GUILD", "DM_REFUSAL", "effective_config", "Grant", "grant", "grants",
    "GuildPolicy", "load_config", "load_policy", "member_id", "minutes", "moved_to_relax_text", "order_relax",
    "PeriodPolicy", "plan_reserve", "reconcile", "reconcile_member", "record_work", "refund", "RELEASE_RECHECK_S",
    "RELEASE_RETRY_FOR_S", "RELEASE_RETRY_S", "release_unqueued", "release_when_back", "Render", "render_of",
    "reserve", "reserve_reads", "reset", "set_grant", "settle", "source_text", "subscribe_text", "Tier", "tier_lines",
    "TiersConfig", "TierSettings", "top_users", "unban", "update_policy", "Usage", "usage", "Who",
]
