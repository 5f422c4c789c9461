"""Issue 13's quota holes, driven the way a member trying to cheat would: chained Upscale (2x), free re-renders,
a backstop that stops at 500, a settle that errors half-way, DMs around a ban, per-job estimates and speed samples."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

import quotas
from bench.redis_server import free_port
from core import jobs, keys
from core.buttonjobs import button_job, check_upscale2x
from core.buttons import ButtonRef
from core.errors import TierLimit, TooManyJobs
from core.models import ModelRegistry, tiny_model
from core.spec import VARY_STRENGTH
from quotas import admission, ledger
from quotas.tiers import PeriodPolicy, load_config
from tests.core.test_jobs import make_spec
from tests.quotas.quota_helpers import create_jobs, request, run, tier

CONFIG = load_config()
FREE = quotas.Who("g", "7")


def reserved(conn, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in conn.hgetall(keys.quota_reservation(job_id)).items()}


def test_chained_upscale2x_is_charged_for_its_size_and_refused_past_the_tier(redis_conn):
    """64 px grid, U1, then Upscale (2x) on each result: 128, 256, 512 admitted, each reserving about 4x the last;
    the 1024 one is refused before anything is counted, naming Upscale (2x) and the tier's limit."""
    grid = make_spec(mode="fast", width=64, height=64, steps=4)
    parent = jobs.create(redis_conn, jobs.new_job_id(), grid, "discord:1")
    up = jobs.create(redis_conn, jobs.new_job_id(), grid, "discord:7", kind="upscale",
                     source={"job_id": parent.job_id, "index": 1})
    works, sizes = [], []
    for _ in range(3):
        job = button_job(up, ButtonRef("up2x", 1, up.job_id), "fast")
        admitted = quotas.reserve(redis_conn, CONFIG, FREE, [job.spec], kind=job.kind)
        works.append(float(reserved(redis_conn, admitted.job_ids[0])["mpx_steps"]))
        sizes.append((job.spec.width, job.spec.height))
        up = jobs.create(redis_conn, admitted.job_ids[0], job.spec, "discord:7", kind="upscale2x",
                         source={"job_id": up.job_id, "index": 1})
        run(redis_conn, up.job_id, 0.01)
    assert sizes == [(128, 128), (256, 256), (512, 512)]
    assert works[0] == pytest.approx(ledger.mpx_steps(128, 128, 4, images=1))
    assert works[1] == pytest.approx(4 * works[0]) and works[2] == pytest.approx(4 * works[1])
    job = button_job(up, ButtonRef("up2x", 1, up.job_id), "fast")
    assert (job.spec.width, job.spec.height) == (1024, 1024)
    with pytest.raises(TierLimit, match=r"Upscale \(2x\) would make a 1024x1024 image.*free tier allows \(262144\)"):
        quotas.reserve(redis_conn, CONFIG, FREE, [job.spec], kind=job.kind)


def test_upscale2x_past_the_models_limit_is_refused():
    """The model's limit: one 2x of its largest render; a 2x of that is refused with words, not queued."""
    registry = ModelRegistry((tiny_model(),))  # 64x64 budget: upscales up to 128x128
    spec = make_spec(width=64, height=64)
    check_upscale2x(registry, dataclasses.replace(spec, width=128, height=128))
    with pytest.raises(TierLimit, match=r"Upscale \(2x\) would make a 256x256 image, larger than model tiny"):
        check_upscale2x(registry, dataclasses.replace(spec, width=256, height=256))


def test_variations_and_rerolls_of_an_upscale_render_at_the_grids_size(redis_conn):
    """Under a 2x result, Vary and re-roll render at the grid's size again (not four images of the upscale's)."""
    grid = make_spec(width=64, height=64)
    up = jobs.create(redis_conn, jobs.new_job_id(), grid, "discord:1", kind="upscale")
    big_spec = button_job(up, ButtonRef("up2x", 1, up.job_id), "fast").spec
    big = jobs.create(redis_conn, jobs.new_job_id(), big_spec, "discord:1", kind="upscale2x")
    for action in ("strong", "subtle", "reroll"):
        spec = button_job(big, ButtonRef(action, 1, big.job_id), "fast").spec
        assert (spec.width, spec.height) == (64, 64) and "base_size" not in spec.extras
    bigger = button_job(big, ButtonRef("up2x", 1, big.job_id), "fast").spec
    assert (bigger.width, bigger.height) == (256, 256)


def test_variation_estimate_counts_the_steps_its_strength_runs(redis_conn):
    """Vary (Subtle) reserves for 40% of the steps, Vary (Strong) 75%, a grid all of them."""
    spec = make_spec(mode="fast", width=512, height=512, steps=20)
    std = quotas.Who("g", "8")
    config = dataclasses.replace(CONFIG, default_tier="pro")
    works = {}
    for name, kind, strength in (("grid", "grid", 1.0), ("strong", "vary", VARY_STRENGTH["strong"]),
                                 ("subtle", "vary", VARY_STRENGTH["subtle"])):
        got = quotas.reserve(redis_conn, config, std, [spec], kind=kind, strength=strength)
        works[name] = float(reserved(redis_conn, got.job_ids[0])["mpx_steps"])
    assert works["strong"] == pytest.approx(works["grid"] * 15 / 20)
    assert works["subtle"] == pytest.approx(works["grid"] * 8 / 20)


def test_an_expired_u_is_charged_like_a_render_and_goes_to_relax(redis_conn):
    """U1 of a stored image is free; once the image expired, U1 reserves a one-image render and, with no fast time
    left, is moved to relax (fair order) instead of running fast for nothing."""
    config = dataclasses.replace(CONFIG, default_tier="standard")
    member = quotas.Who("g", "9")
    spec = make_spec(mode="fast", width=512, height=512, steps=25)
    copy = quotas.reserve(redis_conn, config, member, [spec], kind="upscale", stored=True)
    assert copy.estimate_s == 0 and reserved(redis_conn, copy.job_ids[0])["free"] == "1"
    again = quotas.reserve(redis_conn, config, member, [spec], kind="upscale", stored=False)
    expected = ledger.JOB_OVERHEAD_S + ledger.DEFAULT_S_PER_MPX_STEP * ledger.mpx_steps(512, 512, 25, images=1)
    assert again.estimate_s == pytest.approx(expected) and reserved(redis_conn, again.job_ids[0])["free"] == "0"
    start, _ = quotas.tiers.period_bounds(time.time(), config.period)
    redis_conn.hset(keys.quota_balance(member.member, int(start)), "used_s", config.tiers["standard"].fast_gpu_s)
    moved = quotas.reserve(redis_conn, config, member, [spec], kind="upscale", stored=False)
    assert (moved.mode, moved.moved_to_relax) == ("relax", True)


def test_the_backstop_walks_past_500_reservations(redis_conn):
    """A finished job behind 600 older reservations still queued is settled by the backstop's later sweeps."""
    big = tier(max_waiting=1000, max_running_fast=1000, requests_per_minute=1000, max_jobs_per_command=1000,
               fast_gpu_s=10**9)
    old = admission.admit(redis_conn, "g:1", big, request(600, now=time.time() - 100))
    create_jobs(redis_conn, old)
    late = admission.admit(redis_conn, "g:2", big, request(1))
    create_jobs(redis_conn, late)
    run(redis_conn, late.job_ids[0], 2.0, apply=False)
    first = quotas.reconcile(redis_conn, now=time.time())
    second = quotas.reconcile(redis_conn, now=time.time())
    assert first == [] and second == [late.job_ids[0]]
    assert not redis_conn.exists(keys.quota_reservation(late.job_ids[0]))
    assert quotas.reconcile(redis_conn, now=time.time()) == []  # the walk starts over from the oldest
    assert redis_conn.zcard(keys.quota_reservations()) == 600


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -1.0])
def test_settle_with_a_bad_gpu_time_changes_nothing(redis_conn, bad):
    """A non-finite or negative GPU time is refused before anything is written; the reservation stays whole."""
    got = admission.admit(redis_conn, "g:1", tier(), request())
    balance = keys.quota_balance("g:1", int(quotas.tiers.period_bounds(time.time(), PeriodPolicy())[0]))
    before = redis_conn.hgetall(balance)
    with pytest.raises(ValueError, match="GPU time"):
        ledger.settle(redis_conn, got.job_ids[0], bad)
    with pytest.raises(Exception, match="invalid GPU time"):  # the script checks too, before its first write
        ledger._apply(redis_conn, got.job_ids[0], bad if bad >= 0 or bad != bad else -5.0)
    assert redis_conn.hgetall(balance) == before and redis_conn.exists(keys.quota_reservation(got.job_ids[0]))
    assert ledger.settle(redis_conn, got.job_ids[0], 1.5)
    assert float(redis_conn.hget(balance, "reserved_s")) == pytest.approx(0.0)


def test_image_commands_are_refused_in_dms_even_to_a_banned_member(redis_conn):
    """A member banned in a server gets nothing from a DM: image commands work only in a server."""
    quotas.ban(redis_conn, "g", "7", "spam")
    with pytest.raises(TierLimit, match="only in a server"):
        quotas.reserve(redis_conn, CONFIG, quotas.Who(quotas.DM_GUILD, "7"), [make_spec(width=64, height=64)])
    with pytest.raises(TierLimit, match="only in a server"):
        quotas.plan_reserve(CONFIG, quotas.Who(quotas.DM_GUILD, "7"), [make_spec()], [None, {}, {}])


def test_permutations_across_models_reserve_and_learn_per_model(redis_conn):
    """`{a, b}` over two models: each job reserves its own model's estimate and settles into its own model's
    speed, from the work the worker recorded."""
    config = dataclasses.replace(CONFIG, default_tier="pro")
    member = quotas.Who("g", "5")
    small = make_spec(mode="fast", width=64, height=64, steps=4, model="tiny")
    large = make_spec(mode="fast", width=512, height=512, steps=25, model="big")
    got = quotas.reserve(redis_conn, config, member, [small, large])
    a, b = (reserved(redis_conn, j) for j in got.job_ids)
    assert (a["model"], b["model"]) == ("tiny", "big")
    assert float(a["estimate_s"]) < float(b["estimate_s"])
    assert float(a["mpx_steps"]) == pytest.approx(ledger.mpx_steps(64, 64, 4))
    for job_id, spec in zip(got.job_ids, (small, large), strict=True):
        jobs.create(redis_conn, job_id, spec, "discord:5")
    quotas.record_work(redis_conn, got.job_ids[0], 1.0, ttl_s=60)  # what the worker rendered: 1 mpx-step
    run(redis_conn, got.job_ids[0], ledger.JOB_OVERHEAD_S + 0.5)
    assert ledger.speed(redis_conn, "tiny") == pytest.approx(
        ledger.DEFAULT_S_PER_MPX_STEP + ledger.SPEED_EMA_ALPHA * (0.5 - ledger.DEFAULT_S_PER_MPX_STEP))
    assert ledger.speed(redis_conn, "big") == ledger.DEFAULT_S_PER_MPX_STEP


def test_duplicate_ids_are_refused_before_anything_is_reserved(redis_conn):
    """One id twice in an admission, or an id admitted already, reserves nothing (no leaked hold)."""
    one = request()
    twice = dataclasses.replace(one, job_ids=one.job_ids * 2)
    with pytest.raises(ValueError):
        admission.admit(redis_conn, "g:1", tier(), twice)
    call = admission.admit_call("g:1", tier(), twice, s_per_mpx_step=0.3)
    with pytest.raises(ValueError, match="admitted already"):
        call.result(redis_conn.eval(admission.ADMIT_SCRIPT, len(call.keys), *call.keys, *call.args))
    admission.admit(redis_conn, "g:1", tier(), one)
    with pytest.raises(ValueError, match="admitted already"):
        admission.admit(redis_conn, "g:1", tier(), dataclasses.replace(one, now=time.time()))
    use = ledger.usage(redis_conn, "g:1", tier(), now=time.time(), policy=PeriodPolicy())
    assert use.active_fast == 1 and use.reserved_s == pytest.approx(float(reserved(redis_conn, one.job_ids[0])[
        "reserved_s"]))


def test_running_refusal_suggests_relax_only_to_tiers_with_relax(redis_conn):
    """The free tier (no relax) is told to wait, not to use /relax; a tier with relax is told both."""
    for relax, member in ((False, "g:1"), (True, "g:2")):
        capped = tier(max_running_fast=1, relax=relax, max_running_relax=3 if relax else 0)
        admission.admit(redis_conn, member, capped, request())
        with pytest.raises(TooManyJobs) as refused:
            admission.admit(redis_conn, member, capped, request())
        assert ("/relax" in str(refused.value)) is relax


def test_release_when_back_gives_up_quietly_and_releases_once_redis_answers(redis_conn):
    """`release_when_back` (the web app's thread after an `AdmissionUnanswered`): against a Redis that never answers
    it returns False once its time is up, without raising; against one that answers it releases the reservation and
    the running place, and releases again after its recheck (an admission that arrived late is undone too)."""
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    assert quotas.release_when_back(nowhere, ["j"], retry_s=0.01, for_s=0.05, recheck_s=0) is False
    admitted = quotas.reserve(redis_conn, CONFIG, FREE, [make_spec(width=64, height=64)])
    assert redis_conn.hlen(keys.quota_active(FREE.member)) == 1
    assert quotas.release_when_back(redis_conn, admitted.job_ids, retry_s=0.01, for_s=1, recheck_s=0) is True
    assert redis_conn.hlen(keys.quota_active(FREE.member)) == 0
    assert not redis_conn.exists(keys.quota_reservation(admitted.job_ids[0]))
