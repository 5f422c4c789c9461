"""The web app over HTTP: signing in, the gallery, a job's page and images, buttons, Vary (Region), the dashboard,
`/metrics`, and bad input refused with the right status."""

from __future__ import annotations

import base64
import io
import json
import logging

import aiohttp
import pytest
import redis
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import quotas
from core import jobs, keys, metrics, queue, usersettings
from core.settings import AdminSettings
from quotas import load_config
from tests.bot.conftest import eventually
from tests.redisproxy import holding_one_reply
from tests.web.conftest import csrf_of, press, sign_in
from tests.web.site import Site, png, seed_job
from web import gallery
from web.session import COOKIE

MANAGE_GUILD = 1 << 5


async def test_sign_in_shows_my_jobs_and_not_another_members(site: Site, redis_conn: redis.Redis) -> None:
    """After the OAuth2 flow the gallery lists the member's jobs, newest first, and none of another member's."""
    ann, bob = site.emu.add_user("ann"), site.emu.add_user("bob")
    seed_job(redis_conn, ann, "an old lighthouse", created_at=1_700_000_000)
    seed_job(redis_conn, ann, "a new harbour")
    seed_job(redis_conn, bob, "bob's secret garden")
    async with await sign_in(site, ann) as client, client.get(site.url + "/gallery") as response:
        page = await response.text()
    assert response.status == 200
    assert page.index("a new harbour") < page.index("an old lighthouse")
    assert "secret garden" not in page


async def test_gallery_filters_and_pages(site: Site, redis_conn: redis.Redis) -> None:
    """Prompt text, kind and dates filter the gallery; hidden and deleted jobs leave it; pages hold page_size jobs."""
    ann = site.emu.add_user("ann")
    for n in range(30):
        seed_job(redis_conn, ann, f"cat number {n}", created_at=1_750_000_000 + n)
    seed_job(redis_conn, ann, "a lone dog", created_at=1_600_000_000)
    seed_job(redis_conn, ann, "a hidden dog", visibility=jobs.HIDDEN)
    async with await sign_in(site, ann) as client:
        async def count(query: str) -> str:
            async with client.get(site.url + "/gallery?" + query) as response:
                return (await response.text()).split('class="count">')[1].split("<")[0]
        assert await count("q=DOG") == "1 job"
        assert await count("q=dog&hidden=1") == "1 job"
        assert await count("until=2020-12-31") == "1 job"
        assert await count("kind=vary") == "0 jobs"
        async with client.get(site.url + "/gallery?q=cat&page=2") as response:
            second = await response.text()
    assert second.count('class="card"') == 30 - site.services.settings.page_size
    assert "cat number 5<" in second and "cat number 29<" not in second


async def test_job_page_images_and_etag(site: Site, redis_conn: redis.Redis) -> None:
    """A job's page shows its prompt and parameters; its PNGs come with an ETag, and a matching If-None-Match
    is answered 304 without the bytes; `download=1` makes it a file; the gallery's thumbnail is a JPEG."""
    ann = site.emu.add_user("ann")
    job_id = seed_job(redis_conn, ann, "a copper kettle --ar 1:1 --seed 42")
    async with await sign_in(site, ann) as client:
        async with client.get(f"{site.url}/jobs/{job_id}") as response:
            page = await response.text()
        assert "a copper kettle" in page and "--seed 42" in page
        async with client.get(f"{site.url}/jobs/{job_id}/image/2.png?download=1") as response:
            assert response.status == 200 and response.content_type == "image/png"
            etag = response.headers["ETag"]
            assert "attachment" in response.headers["Content-Disposition"]
            Image.open(io.BytesIO(await response.read())).verify()
        async with client.get(f"{site.url}/jobs/{job_id}/image/2.png", headers={"If-None-Match": etag}) as response:
            assert response.status == 304 and await response.read() == b""
        async with client.get(f"{site.url}/jobs/{job_id}/thumb.jpg") as response:
            assert response.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await response.read())).size == (128, 128)  # the grid's, under 384
    assert Image.open(io.BytesIO(gallery.shrink(png((2048, 1024), (1, 2, 3))))).size == (384, 192)


async def test_another_members_job_is_not_found(site: Site, redis_conn: redis.Redis) -> None:
    """A hidden or deleted job of another member, or one made in an age-restricted channel, is a 404 (page, image,
    events), the same as an id that does not exist; a public one can be seen; its owner sees a hidden one, and an
    admin sees a deleted one."""
    ann, bob = site.emu.add_user("ann"), site.emu.add_user("bob")
    hidden = seed_job(redis_conn, bob, "bob's hidden one", visibility=jobs.HIDDEN)
    mature = seed_job(redis_conn, bob, "bob's age-restricted one", checked=False)
    deleted = seed_job(redis_conn, bob, "bob's deleted one", visibility=jobs.DELETED)
    public = seed_job(redis_conn, bob, "bob's public one")
    async with await sign_in(site, ann) as client:
        for path in (f"/jobs/{hidden}", f"/jobs/{hidden}/image/grid.png", f"/jobs/{deleted}/image/1.png",
                     f"/jobs/{hidden}/events", f"/jobs/{mature}", f"/jobs/{'0' * 32}", "/jobs/not-an-id"):
            async with client.get(site.url + path) as response:
                assert response.status == 404, path
        async with client.get(f"{site.url}/jobs/{public}") as response:
            assert response.status == 200
    async with await sign_in(site, bob) as client, client.get(f"{site.url}/jobs/{hidden}") as response:
        assert response.status == 200
    site.services.admins.__dict__["admin_user_ids"] = ann.id  # the bot's configured admins: ann is one now
    async with await sign_in(site, ann) as client, client.get(f"{site.url}/jobs/{deleted}") as response:
        assert response.status == 200


async def test_reroll_and_variation_go_through_admission(site: Site, redis_conn: redis.Redis) -> None:
    """Re-roll and V2 from the web are admitted and queued like clicks in Discord, under the member's tier: a
    reservation each, on the member's lane, in their lists; an unknown button is a 400 and queues nothing."""
    ann = site.emu.add_user("ann")
    quotas.set_grant(redis_conn, f"{site.emu.state.guild_id}:{ann.id}", load_config(), "pro", days=None, now=0)
    parent = seed_job(redis_conn, ann, "a paper boat")
    async with await sign_in(site, ann) as client:
        made = []
        for action, index in (("reroll", 0), ("v", 2)):
            status, body = await press(client, site, parent, action, index)
            assert status == 201, body
            made.append(json.loads(body)["job_id"])
        status, _ = await press(client, site, parent, "v", 9)
        assert status == 400
    records = [jobs.get(redis_conn, job_id) for job_id in made]
    assert [(r.kind, r.owner, r.state) for r in records if r] == [("grid", f"discord:{ann.id}", "queued"),
                                                                  ("vary", f"discord:{ann.id}", "queued")]
    assert all(redis_conn.exists(keys.quota_reservation(job_id)) for job_id in made)
    lane = queue.rq_queue(redis_conn, keys.queue_name("tiny", "fast"))
    assert sorted(lane.job_ids) == sorted(made)


async def test_an_admission_whose_answer_never_came_is_released(redis_conn: redis.Redis) -> None:
    """Redis runs a web re-roll's admission script and its answer never reaches the web app (a proxy drops it; the
    app's Redis client times out after 1 s): the member is answered 503 "unreachable", and what the script reserved
    is released while Redis answers, so the member is not held at their cap for the ledger's 15-minute backstop."""
    port = redis_conn.connection_pool.connection_kwargs["port"]
    async with holding_one_reply(port, quotas.ADMIT_SCRIPT.encode()[:200]) as proxy_port:
        site = await Site.start(f"redis://127.0.0.1:{proxy_port}/0?socket_timeout=1")
        try:
            ann = site.emu.add_user("ann")
            member = f"{site.emu.state.guild_id}:{ann.id}"
            parent = seed_job(redis_conn, ann, "a paper boat")
            async with await sign_in(site, ann) as client:
                status, body = await press(client, site, parent, "reroll")
            assert status == 503
            assert "unreachable" in body
            assert redis_conn.zcard(keys.quota_rate(member)) == 1  # the script ran: it counted the request
            await eventually(lambda: redis_conn.hlen(keys.quota_active(member)) == 0,
                             timeout=quotas.RELEASE_RECHECK_S + quotas.RELEASE_RETRY_S * 2)
            assert redis_conn.zcard(keys.quota_reservations()) == 0
            assert queue.rq_queue(redis_conn, keys.queue_name("tiny", "fast")).count == 0
        finally:
            await site.stop()


async def test_a_stealth_members_web_jobs_are_private(site: Site, redis_conn: redis.Redis) -> None:
    """With /stealth on and a tier that allows it (Pro), a re-roll from the web is recorded hidden, as it would be
    from Discord: only its owner (and admins) can open it."""
    ann = site.emu.add_user("ann")
    quotas.set_grant(redis_conn, f"{site.emu.state.guild_id}:{ann.id}", load_config(), "pro", days=None, now=0)
    usersettings.set_stealth(redis_conn, f"discord:{ann.id}", True)
    parent = seed_job(redis_conn, ann, "a paper boat")
    async with await sign_in(site, ann) as client:
        status, body = await press(client, site, parent, "reroll")
    assert status == 201, body
    record = jobs.get(redis_conn, json.loads(body)["job_id"])
    assert record is not None and record.visibility == jobs.HIDDEN


async def test_single_image_offers_discords_editing_buttons(site: Site, redis_conn: redis.Redis) -> None:
    """Under an upscaled image the web offers what Discord does (Vary, Upscale (2x), Zoom Out, Pan...): Zoom Out 2x
    queues an `edit` job; a grid's button (U1) under it is a 400."""
    ann = site.emu.add_user("ann")
    single = seed_job(redis_conn, ann, "a paper boat", kind="upscale")
    async with await sign_in(site, ann) as client:
        async with client.get(f"{site.url}/jobs/{single}") as response:
            page = await response.text()
        token = csrf_of(page)
        assert "Zoom Out 2x" in page and "Pan left" in page and ">U1<" not in page
        headers = {"X-CSRF-Token": token, "Accept": "application/json"}
        async with client.post(f"{site.url}/jobs/{single}/action", data={"action": "zoom2", "index": 1},
                               headers=headers) as response:
            assert response.status == 201, await response.text()
            zoom = jobs.get(redis_conn, (await response.json())["job_id"])
        async with client.post(f"{site.url}/jobs/{single}/action", data={"action": "u", "index": 1},
                               headers=headers) as response:
            assert response.status == 400
    assert zoom is not None and (zoom.kind, zoom.source["op"], zoom.source["zoom"]) == ("edit", "zoom", 2.0)


async def test_remix_and_custom_zoom_take_the_edited_prompt(site: Site, redis_conn: redis.Redis) -> None:
    """The job page's Remix section offers the buttons that take an edited prompt (re-roll and V1-V4 under a grid;
    Custom Zoom among a single image's), and they run as in Discord: a remixed re-roll takes the whole new prompt,
    a remixed V2 its text at the grid's size, Custom Zoom its --zoom; a bad prompt and a U1 with a prompt are 400s
    that queue nothing."""
    ann = site.emu.add_user("ann")
    quotas.set_grant(redis_conn, f"{site.emu.state.guild_id}:{ann.id}", load_config(), "pro", days=None, now=0)
    grid = seed_job(redis_conn, ann, "a paper boat")
    single = seed_job(redis_conn, ann, "a paper boat", kind="upscale")
    async with await sign_in(site, ann) as client:
        async with client.get(f"{site.url}/jobs/{grid}") as response:
            page = await response.text()
        assert 'id="remix-prompt"' in page and 'data-action="zoomc"' not in page
        headers = {"X-CSRF-Token": csrf_of(page), "Accept": "application/json"}

        async def press(job_id: str, action: str, index: int, text: str) -> tuple[int, dict]:
            async with client.post(f"{site.url}/jobs/{job_id}/action", headers=headers,
                                   data={"action": action, "index": index, "prompt": text}) as response:
                return response.status, await response.json()

        status, rerolled = await press(grid, "reroll", 0, "a paper plane --ar 16:9")
        assert status == 201, rerolled
        status, varied = await press(grid, "v", 2, "a red paper boat --ar 16:9")
        assert status == 201, varied
        status, zoomed = await press(single, "zoomc", 1, "a boat at sea --zoom 1.5")
        assert status == 201, zoomed
        before = redis_conn.dbsize()
        assert (await press(grid, "reroll", 0, "a cat --ar 99:1"))[0] == 400
        assert (await press(grid, "u", 1, "a cat"))[0] == 400
        assert redis_conn.dbsize() == before
        async with client.get(f"{site.url}/jobs/{single}") as response:
            assert 'data-action="zoomc"' in await response.text()
    records = {name: jobs.get(redis_conn, answer["job_id"]) for name, answer in
               (("reroll", rerolled), ("v", varied), ("zoomc", zoomed))}
    reroll, vary, zoom = records["reroll"], records["v"], records["zoomc"]
    assert reroll is not None and (reroll.spec.prompt, reroll.spec.aspect) == ("a paper plane", "16:9")
    assert vary is not None and vary.kind == "vary" and vary.spec.prompt == "a red paper boat"
    assert vary.spec.aspect == "1:1"  # a variation keeps its image's size: only the text is remixed
    assert zoom is not None and (zoom.kind, zoom.source["zoom"], zoom.spec.prompt) == ("edit", 1.5, "a boat at sea")


async def test_a_describe_job_shows_its_image_and_its_four_prompts(site: Site, redis_conn: redis.Redis) -> None:
    """A /describe job's page: the image described (one, not four), the four prompts found, and no buttons (its
    answer is its prompts); a second image is not there."""
    ann = site.emu.add_user("ann")
    described = seed_job(redis_conn, ann, "a picture", kind="describe")
    found = [f"a red circle on a blue background, take {n}" for n in range(1, 5)]
    redis_conn.set(keys.job_prompts(described), json.dumps(found))
    async with await sign_in(site, ann) as client:
        async with client.get(f"{site.url}/jobs/{described}") as response:
            page = await response.text()
        async with client.get(f"{site.url}/jobs/{described}/image/2.png") as second:
            assert second.status == 404
    assert all(text in page for text in found)
    assert 'data-action="' not in page and "/region?" not in page and "image/grid.png" in page


async def test_refusals_are_answered_and_counted(site: Site, redis_conn: redis.Redis) -> None:
    """A banned member's button is refused with 403 and the quota's words; the refusal is counted in /metrics."""
    ann = site.emu.add_user("ann")
    parent = seed_job(redis_conn, ann, "a paper boat")
    redis_conn.hset(keys.banned(site.emu.state.guild_id), ann.id, "spamming")
    async with await sign_in(site, ann) as client:
        status, body = await press(client, site, parent, "reroll")
        assert status == 403
        assert "spamming" in json.loads(body)["error"]
        async with client.get(site.url + "/metrics") as response:
            text = await response.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("imagine_admission_refusals_total", (("reason", "banned"), ("via", "web")))] == 1.0


def mask_url(size: tuple[int, int], box: tuple[int, int, int, int] | None) -> str:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    if box:
        image.paste((255, 255, 255, 255), box)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_region_checks_the_mask_then_queues_a_region_job(site: Site, redis_conn: redis.Redis) -> None:
    """Vary (Region): an empty mask or one of the wrong size is a 400 with words and queues nothing; a drawn one
    queues a `region_mask` job whose mask is stored beside it."""
    ann = site.emu.add_user("ann")
    parent = seed_job(redis_conn, ann, "a quiet street")
    async with await sign_in(site, ann) as client:
        async with client.get(f"{site.url}/jobs/{parent}/region?index=3") as response:
            token = csrf_of(await response.text())

        async def submit(mask: str) -> aiohttp.ClientResponse:
            return await client.post(f"{site.url}/jobs/{parent}/region",
                                     data={"index": 3, "prompt": "a red door", "mask": mask},
                                     headers={"X-CSRF-Token": token, "Accept": "application/json"})
        empty, wrong, good = (await submit(mask_url((64, 64), None)), await submit(mask_url((32, 32), (0, 0, 8, 8))),
                              await submit(mask_url((64, 64), (10, 10, 30, 40))))
        assert (empty.status, wrong.status, good.status) == (400, 400, 201)
        assert "empty" in (await empty.json())["error"]
        job_id = (await good.json())["job_id"]
    record = jobs.get(redis_conn, job_id)
    assert record is not None and (record.kind, record.source, record.spec.prompt) == (
        "region_mask", {"job_id": parent, "index": 3}, "a red door")
    mask = Image.open(io.BytesIO(redis_conn.get(keys.job_mask(job_id))))
    assert mask.size == (64, 64) and mask.getpixel((20, 20)) == 255 and mask.getpixel((50, 50)) == 0


async def test_hide_and_delete_are_soft_and_audited(site: Site, redis_conn: redis.Redis) -> None:
    """Hiding takes a job out of the gallery (into its hidden view); deleting takes it out of both, keeps the
    record for admins, and both are in the audit log."""
    ann = site.emu.add_user("ann")
    job_id = seed_job(redis_conn, ann, "a lantern")
    async with await sign_in(site, ann) as client:
        async with client.get(f"{site.url}/jobs/{job_id}") as response:
            token = csrf_of(await response.text())
        for choice in ("hidden", "deleted"):
            async with client.post(f"{site.url}/jobs/{job_id}/visibility",
                                   data={"visibility": choice, "csrf": token}) as response:
                assert response.status == 200
        async with client.get(f"{site.url}/gallery?hidden=1") as response:
            assert "a lantern" not in await response.text()
    record = jobs.get(redis_conn, job_id)
    assert record is not None and record.visibility == jobs.DELETED
    actions = [row for row in redis_conn.lrange(keys.audit_log(site.emu.state.guild_id), 0, -1)]
    assert [b"image deleted" in row for row in actions] == [True, False]


async def test_dashboard_is_for_admins_only(site: Site, redis_conn: redis.Redis) -> None:
    """A member without Manage Server gets 403 from the dashboard; one with it sees lanes, usage and logs."""
    member, boss = site.emu.add_user("member"), site.emu.add_user("boss", permissions=MANAGE_GUILD)
    seed_job(redis_conn, member, "a kite")
    async with await sign_in(site, member) as client, client.get(site.url + "/admin") as response:
        assert response.status == 403
    async with await sign_in(site, boss) as client, client.get(site.url + "/admin") as response:
        assert response.status == 200
        page = await response.text()
    assert "Lanes" in page and "Usage this period" in page and "Moderation log" in page


async def test_metrics_parse_and_count_outcomes(site: Site, redis_conn: redis.Redis) -> None:
    """`/metrics` is Prometheus' text format: outcomes by kind, lane and outcome, and the wait and render
    histograms, as the jobs' final transitions counted them; the workers' retries of Discord requests by reason."""
    ann = site.emu.add_user("ann")
    seed_job(redis_conn, ann, "one")
    seed_job(redis_conn, ann, "two")
    seed_job(redis_conn, ann, "three", state=jobs.FAILED)
    for reason in ("rate_limited", "server_error", "server_error"):  # as a worker's Discord client counts retries
        metrics.count(redis_conn, metrics.DISCORD_RETRIES, reason=reason)
    async with aiohttp.ClientSession() as client, client.get(site.url + "/metrics") as response:
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    jobs_done = {tuple(sorted(s.labels.items())): s.value for s in families["imagine_jobs"].samples}
    assert jobs_done[(("kind", "grid"), ("lane", "fast"), ("outcome", "done"))] == 2.0
    assert jobs_done[(("kind", "grid"), ("lane", "fast"), ("outcome", "failed"))] == 1.0
    render_count = [s.value for s in families["imagine_job_render_seconds"].samples if s.name.endswith("_count")]
    wait_inf = [s.value for s in families["imagine_job_wait_seconds"].samples if s.labels.get("le") == "+Inf"]
    assert render_count == [2.0] and wait_inf == [3.0]
    assert "imagine_queue_depth" in families
    retries = {s.labels["reason"]: s.value for s in families["imagine_discord_request_retries"].samples
               if s.name.endswith("_total")}
    assert retries == {"rate_limited": 1.0, "server_error": 2.0}


async def test_bad_input_is_refused_with_the_right_status(site: Site, redis_conn: redis.Redis,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A forged session cookie is no session; a POST without the CSRF token is 403, from another site 403, without
    a session 401; an OAuth2 state that is not ours is 400; a huge query string is 414. The logs carry none of the
    secrets (cookie, state, code)."""
    ann = site.emu.add_user("ann")
    job_id = seed_job(redis_conn, ann, "a lantern")
    forged = "eyJ1c2VyIjoiMSJ9.forged.signature"
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession(cookies={COOKIE: forged}) as stranger:
        async with stranger.get(site.url + "/gallery", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"].startswith("/login")
        async with stranger.post(f"{site.url}/jobs/{job_id}/visibility", data={"visibility": "deleted"}) as response:
            assert response.status == 401
        async with stranger.get(site.url + "/auth/callback?code=abc&state=not-ours") as response:
            assert response.status == 400
        async with stranger.get(site.url + "/gallery?q=" + "x" * 5000) as response:
            assert response.status == 414
    async with await sign_in(site, ann) as client:
        async with client.post(f"{site.url}/jobs/{job_id}/visibility", data={"visibility": "deleted"}) as response:
            assert response.status == 403
        async with client.post(f"{site.url}/jobs/{job_id}/visibility", data={"visibility": "deleted"},
                               headers={"Origin": "https://evil.example"}) as response:
            assert response.status == 403
    assert jobs.get(redis_conn, job_id).visibility == jobs.PUBLIC  # type: ignore[union-attr]
    logged = caplog.text
    assert "does not verify" in logged and "state mismatch" in logged and "CSRF" in logged
    assert forged not in logged and "not-ours" not in logged and "x" * 100 not in logged


def test_admin_rule_is_the_bots() -> None:
    """Manage Server, a configured admin id or a configured admin role makes an admin; nothing else does."""
    from web.session import Session

    admins = AdminSettings(admin_user_ids="7", admin_role_ids="9")
    def member(user: str, roles: tuple[str, ...] = (), manage: bool = False) -> Session:
        return Session(user, "x", "1", roles, manage, "t")
    assert [member("1", manage=True).is_admin(admins), member("7").is_admin(admins),
            member("2", ("9",)).is_admin(admins), member("2", ("8",)).is_admin(admins)] == [True, True, True, False]


async def test_progress_streams_until_the_outcome(site: Site, redis_conn: redis.Redis) -> None:
    """A running job's page streams its progress as server-sent events: the state now, each step the worker
    records, then the outcome, and the stream ends."""
    ann = site.emu.add_user("ann")
    job_id = seed_job(redis_conn, ann, "a slow one", state=jobs.RUNNING)
    async with await sign_in(site, ann) as client, client.get(f"{site.url}/jobs/{job_id}/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        seen: list[str] = []
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            seen.append(line.decode().strip())
            if len(seen) == 1:
                jobs.set_progress(redis_conn, job_id, 2, 4)
            elif len(seen) == 2:
                jobs.finish(redis_conn, job_id, jobs.DONE)
    assert '"step": 0' in seen[0] and '"step": 2, "total": 4' in seen[1] and '"state": "done"' in seen[-1]
