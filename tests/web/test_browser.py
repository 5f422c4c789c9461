"""The web app in a real browser: Debian's Chromium, headless, driven by Playwright (no browser download).

One browser and one running site (web app and Discord emulator, in a thread of their own) serve every test here;
each test has its own browser context (its own cookies) and signs in through the emulator's OAuth2 consent screen
as a person would. Screenshots of the main pages are written to out/screenshots/ for people to look at.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import moderation
import quotas
from core import audit, jobs, keys, prompt, queue
from discord_emulator import User
from tests.web.site import REGISTRY, Site, seed_job

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is installed by the test extra")

SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MANAGE_GUILD = 1 << 5
T = TypeVar("T")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium (.ci/run does)")


class LiveSite:
    """The site on an event loop in its own thread, for synchronous Playwright tests."""

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.site: Site = self.run(Site.start(redis_url))

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        async def on_loop() -> T:
            return fn()
        return self.run(on_loop())

    def add_user(self, name: str, **kwargs: Any) -> User:
        return self.call(lambda: self.site.emu.add_user(name, **kwargs))

    def close(self) -> None:
        self.run(self.site.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[LiveSite]:
    site = LiveSite(redis_url)
    yield site
    site.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system's packages (`--no-sandbox` as root, where its sandbox cannot start), shared
    by this module's tests. Not session-wide: Playwright's sync API holds an event loop in the main thread while it
    is open, and the asyncio tests of later modules need it closed."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, live: LiveSite) -> Iterator[Any]:
    """A fresh browser context (no cookies) with clipboard access, on the live site."""
    context = browser.new_context(base_url=live.site.url, viewport={"width": 1200, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def sign_in(page: Any, user: User) -> None:
    """Through the emulator's consent screen (every test adds members with names of their own to the one emulator:
    the screen lists them all)."""
    page.goto("/login")
    page.get_by_role("button", name=f"Authorize as {user.username}").click()
    page.wait_for_url("**/gallery")


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def seed_dashboard(conn: redis.Redis, guild: str, member: User, boss: User) -> None:
    """What an admin's dashboard shows, made through the owning modules: GPU time settled for two members, a job
    waiting in its lane, a grant, a ban, an admin action and a moderation event."""
    config = quotas.load_config()
    for who, seconds in ((member, 95.0), (boss, 40.0)):
        admitted = quotas.reserve(conn, config, quotas.Who(guild, who.id), prompt.parse("a kite", REGISTRY))
        quotas.settle(conn, admitted.job_ids[0], seconds)
    queue.enqueue(conn, prompt.parse("a queued kite", REGISTRY)[0], f"discord:{member.id}")
    quotas.set_grant(conn, f"{guild}:{member.id}", config, "basic", days=30, now=time.time())
    quotas.ban(conn, guild, "123456789", "spam")
    audit.record(conn, guild, boss.id, "tier set", member.id, "basic for 30 days")
    moderation.record_event(conn, moderation.Event("prompt blocked", guild, member.id, time.time(), "a bad word",
                                                   detail="matched 'bad'"))


def test_member_browses_searches_and_copies_a_prompt(page: Any, live: LiveSite, redis_conn: redis.Redis) -> None:
    """Signed in through Discord, a member sees their jobs and not another member's, narrows them by prompt text,
    opens one and copies its full prompt to the clipboard."""
    ann, bob = live.add_user("ann"), live.add_user("bob")
    colors = [(200, 80, 40), (40, 120, 200), (60, 170, 90)]
    for text, color in zip(("a harbour at dawn --ar 1:1", "a lighthouse in fog", "a copper kettle"), colors,
                           strict=True):
        seed_job(redis_conn, ann, text, color=color)
    seed_job(redis_conn, bob, "bob's private garden")
    sign_in(page, ann)
    cards = page.locator("li.card")
    assert cards.count() == 3 and "bob's private garden" not in page.content()
    shot(page, "gallery")
    page.get_by_label("Prompt text").fill("harbour")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**q=harbour**")
    assert cards.count() == 1
    cards.first.get_by_role("link").click()
    page.get_by_role("button", name="Copy prompt").click()
    page.get_by_role("button", name="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("a harbour at dawn --ar 1:1 --seed ")
    shot(page, "job")


def test_member_draws_a_region_and_submits_it(page: Any, live: LiveSite, redis_conn: redis.Redis) -> None:
    """On the Vary (Region) editor a member draws a rectangle and a freehand stroke, types a prompt and submits:
    a region job is queued with their drawing as its mask, and the browser lands on its page."""
    cleo = live.add_user("cleo")
    parent = seed_job(redis_conn, cleo, "a quiet street")
    sign_in(page, cleo)
    page.goto(f"/jobs/{parent}/region?index=2")
    canvas = page.locator("canvas#mask")
    box = canvas.bounding_box()
    left, top, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(left + w * 0.1, top + h * 0.1)
    page.mouse.down()
    page.mouse.move(left + w * 0.5, top + h * 0.6, steps=5)
    page.mouse.up()
    page.get_by_label("Freehand").check()
    page.mouse.move(left + w * 0.7, top + h * 0.2)
    page.mouse.down()
    page.mouse.move(left + w * 0.9, top + h * 0.9, steps=8)
    page.mouse.up()
    page.get_by_label("Prompt for the region").fill("a red door")
    shot(page, "region-editor")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(lambda url: "/region" not in url and "/jobs/" in url)
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    record = jobs.get(redis_conn, job_id)
    assert record is not None and (record.kind, record.spec.prompt, record.source["index"]) == (
        "region_mask", "a red door", 2)
    mask = Image.open(io.BytesIO(redis_conn.get(keys.job_mask(job_id))))
    assert mask.getpixel((int(64 * 0.3), int(64 * 0.35))) == 255  # inside the rectangle
    assert mask.getpixel((int(64 * 0.05), int(64 * 0.95))) == 0  # never painted


def test_member_remixes_a_grid_from_its_page(page: Any, live: LiveSite, redis_conn: redis.Redis) -> None:
    """On a grid's page a member opens Remix, rewrites the prompt and presses Re-roll there: a grid job of the new
    prompt is queued and the browser lands on its page."""
    dara = live.add_user("dara")
    parent = seed_job(redis_conn, dara, "a quiet street")
    sign_in(page, dara)
    page.goto(f"/jobs/{parent}")
    page.get_by_text("Remix: edit the prompt first").click()
    page.get_by_label("Prompt for Remix").fill("a busy street at night")
    page.locator("#remix-actions").get_by_role("button", name="Re-roll").click()
    page.wait_for_url(lambda url: url.rstrip("/").rsplit("/", 1)[1] != parent)
    record = jobs.get(redis_conn, page.url.rstrip("/").rsplit("/", 1)[1])
    assert record is not None and (record.kind, record.spec.prompt) == ("grid", "a busy street at night")


def test_dashboard_refused_to_a_member_and_shown_to_an_admin(page: Any, browser: Any, live: LiveSite,
                                                             redis_conn: redis.Redis) -> None:
    """A member without Manage Server is refused the dashboard; an admin sees lanes, workers and usage; /metrics
    parses as Prometheus' text format."""
    member, boss = live.add_user("member"), live.add_user("boss", permissions=MANAGE_GUILD)
    seed_dashboard(redis_conn, live.site.emu.state.guild_id, member, boss)
    sign_in(page, member)
    assert page.goto("/admin").status == 403
    assert page.get_by_role("link", name="Dashboard").count() == 0
    page.context.clear_cookies()
    sign_in(page, boss)
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_role("heading", name="Usage this period").wait_for()
    shot(page, "dashboard")
    assert "spam" in page.content() and "prompt blocked" in page.content()
    text = page.goto("/metrics").text()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"imagine_jobs", "imagine_job_wait_seconds", "imagine_queue_depth"} <= names
