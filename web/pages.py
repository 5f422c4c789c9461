"""The routes: each reads the request, calls `gallery`, `actions`, `region`, `admin` or `metrics`, and renders.

Access: pages need a session (else a redirect to sign in); a job is shown to its owner, to admins, and to anyone
signed in when it is public (`gallery.may_view`); anything else is a 404, the same as a job that does not exist, so
a guessed id tells nothing. The dashboard needs an admin of the member's server, checked on every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core import audit, jobs, keys
from web import admin, gallery, metrics, oauth, region
from web.actions import buttons_for, press
from web.base import SERVICES, SESSION, answer, render
from web.session import Session

log = logging.getLogger(__name__)

EVENTS_RECHECK_S = 5.0
"""While streaming a job's progress, re-read its record this often (pub/sub drops messages nobody listened to)."""

EVENTS_MAX_S = 30 * 60
"""Longest a progress stream stays open (the page reconnects if the job is still running)."""

IMAGE_CACHE = "private, max-age=0, must-revalidate"
"""Images are revalidated each time (their access can change when a job is hidden) and answered 304 by ETag."""


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", home)
    router.add_get("/healthz", healthz)
    router.add_get("/login", login)
    router.add_get("/auth/callback", callback)
    router.add_post("/logout", logout)
    router.add_get("/gallery", gallery_page)
    router.add_get("/jobs/{job}", job_page)
    router.add_get("/jobs/{job}/image/{which}.png", image)
    router.add_get("/jobs/{job}/thumb.jpg", thumb)
    router.add_get("/jobs/{job}/events", events)
    router.add_post("/jobs/{job}/action", action)
    router.add_post("/jobs/{job}/visibility", visibility)
    router.add_get("/jobs/{job}/region", region_page)
    router.add_post("/jobs/{job}/region", region_submit)
    router.add_get("/admin", admin_page)
    router.add_get("/metrics", metrics_page)


# -- signing in ------------------------------------------------------------------------------------------------


async def home(request: web.Request) -> web.StreamResponse:
    if request[SESSION] is not None:
        raise web.HTTPFound("/gallery")
    return render(request, "home.html", {})


async def healthz(request: web.Request) -> web.StreamResponse:
    await request.app[SERVICES].aconn.ping()
    return web.Response(text="ok")


async def login(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    return await oauth.login(request, services.oauth, services.cookies)


async def callback(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    return await oauth.callback(request, services.oauth, services.cookies)


async def logout(request: web.Request) -> web.StreamResponse:
    return await oauth.logout(request)


def signed_in(request: web.Request) -> Session:
    """The member, or a redirect to sign in (and back here)."""
    session: Session | None = request[SESSION]
    if session is None:
        raise web.HTTPFound(f"/login?next={request.path}")
    return session


# -- the member's pages ------------------------------------------------------------------------------------------


async def gallery_page(request: web.Request) -> web.StreamResponse:
    session = signed_in(request)
    services = request.app[SERVICES]
    filters = gallery.Filters.from_query(request.query)
    found = await gallery.page(services.aconn, session.owner, filters, services.settings.page_size)
    models = [m.name for m in services.deps.registry.models]
    return render(request, "gallery.html", {"page": found, "filters": filters, "models": models,
                                            "kinds": ("grid", "vary", "upscale", "upscale2x", "edit", "region_mask")})


async def viewable(request: web.Request) -> tuple[Session, jobs.JobRecord]:
    """The signed-in member and the job in the path, when they may see it; 404 otherwise."""
    session = signed_in(request)
    services = request.app[SERVICES]
    record = await gallery.get(services.aconn, request.match_info["job"])
    if record is None or not gallery.may_view(record, session.owner, services.is_admin(session)):
        log.info("member %s: job %s not found or not theirs to see", session.user, request.match_info["job"][:40])
        raise web.HTTPNotFound(text="No such job.")
    return session, record


async def job_page(request: web.Request) -> web.StreamResponse:
    session, record = await viewable(request)
    services = request.app[SERVICES]
    spec = record.spec
    params = {"model": spec.model, "size": f"{spec.width}x{spec.height}", "aspect": spec.aspect, "seed": spec.seed,
              "steps": spec.steps, "stylize": spec.stylize, "chaos": spec.chaos, "guidance": spec.guidance_scale,
              "mode": spec.mode, "kind": record.kind, "state": record.state, "negative": spec.negative_prompt or "-"}
    described = await services.aconn.get(keys.job_prompts(record.job_id)) if record.kind == "describe" else None
    return render(request, "job.html", {"job": record, "params": params, "count": gallery.image_count(record),
                                        "full_prompt": gallery.full_prompt(spec),
                                        "mine": record.owner == session.owner,
                                        "buttons": buttons_for(record, services.deps.registry),
                                        "remix_buttons": buttons_for(record, services.deps.registry, remix=True),
                                        "described": json.loads(described) if described else []})


async def image(request: web.Request) -> web.StreamResponse:
    """A job's grid (`grid.png`) or image k (`1.png`..`4.png`), with an ETag; `?download=1` saves it as a file."""
    _, record = await viewable(request)
    which = request.match_info["which"]
    if which == "grid":
        key = keys.job_grid(record.job_id)
    elif which in ("1", "2", "3", "4") and int(which) <= gallery.image_count(record):
        key = keys.job_image(record.job_id, int(which) - 1)
    else:
        raise web.HTTPNotFound(text="No such image.")
    conn = request.app[SERVICES].aconn
    size = await conn.strlen(key)  # the images of a job never change once written: id, name and size tag them
    if not size:
        raise web.HTTPNotFound(text="This image has expired.")
    etag = f'"{record.job_id}-{which}-{size}"'
    headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    data = await conn.get(key)
    if not data:
        raise web.HTTPNotFound(text="This image has expired.")
    if request.query.get("download") == "1":
        headers["Content-Disposition"] = f'attachment; filename="imagine_{record.job_id[:8]}_{which}.png"'
    return web.Response(body=data, content_type="image/png", headers=headers)


async def thumb(request: web.Request) -> web.StreamResponse:
    """The gallery's thumbnail of a job's grid (made on first request), with an ETag."""
    _, record = await viewable(request)
    etag = f'"{record.job_id}-thumb"'  # made once from a grid that never changes
    headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    data = await gallery.thumbnail(request.app[SERVICES].aconn, record.job_id)
    if data is None:
        raise web.HTTPNotFound(text="This image has expired.")
    return web.Response(body=data, content_type="image/jpeg", headers=headers)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of the job's progress: `state` now, then `progress` and the `outcome`, then the end."""
    _, record = await viewable(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    async for event in job_events(request, record):
        # a comment when nothing changed: a closed page ends this stream at the next look instead of at the end
        text = ": waiting\n\n" if event is None else f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
        await response.write(text.encode())
    return response


async def job_events(request: web.Request, record: jobs.JobRecord) -> AsyncIterator[dict[str, Any] | None]:
    """The job's current state, then each change of it until its outcome (or EVENTS_MAX_S); None each time it was
    looked at again and had not changed."""
    conn = request.app[SERVICES].aconn
    last: tuple[str, int, int] | None = None
    async with conn.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(keys.job_events(record.job_id))
        deadline = time.monotonic() + EVENTS_MAX_S
        current: jobs.JobRecord | None = await gallery.get(conn, record.job_id)  # after subscribing: nothing lost
        while current is not None and time.monotonic() < deadline:
            if current.final:
                yield {"type": "outcome", "state": current.state, "reason": current.reason}
                return
            now = (current.state, current.step, current.total)
            if now != last:
                yield {"type": "progress", "state": now[0], "step": now[1], "total": now[2]}
                last = now
            else:
                yield None
            await pubsub.get_message(timeout=EVENTS_RECHECK_S)  # an event, or time to look again
            current = await gallery.get(conn, record.job_id)


async def action(request: web.Request) -> web.StreamResponse:
    """One of the job's buttons (`web.actions.buttons_for`), for a member who may see it, with the member's edited
    `prompt` for the Remix ones; answers the new job's page (JSON for scripts)."""
    session, record = await viewable(request)
    services = request.app[SERVICES]
    form = await request.post()
    try:
        what, index = str(form.get("action", "")), int(str(form.get("index", "0")))
    except ValueError:
        raise web.HTTPBadRequest(text="index must be a number") from None
    try:
        prompt = form.get("prompt")
        job_id = await asyncio.to_thread(press, services.deps, session, services.is_admin(session), record.job_id,
                                         what, index, None if prompt is None else str(prompt))
    except ValueError as exc:  # not a button of this job: said as the page's script reads errors
        return answer(request, str(exc), 400)
    return started(request, job_id)


def started(request: web.Request, job_id: str) -> web.StreamResponse:
    url = f"/jobs/{job_id}"
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"job_id": job_id, "url": url}, status=201)
    raise web.HTTPSeeOther(url)


async def visibility(request: web.Request) -> web.StreamResponse:
    """Hide, show again or delete (soft) one of the member's own jobs; recorded in the admins' audit log."""
    session, record = await viewable(request)
    if record.owner != session.owner:
        raise web.HTTPNotFound(text="No such job.")
    choice = str((await request.post()).get("visibility", ""))
    wanted = {"public": jobs.PUBLIC, "hidden": jobs.HIDDEN, "deleted": jobs.DELETED}.get(choice)
    if wanted is None:
        raise web.HTTPBadRequest(text="visibility must be public, hidden or deleted")
    conn = request.app[SERVICES].conn

    def change() -> None:
        jobs.set_visibility(conn, record.job_id, wanted)
        if wanted == jobs.DELETED:
            conn.zrem(keys.user_gallery(session.owner), record.job_id)
        audit.record(conn, session.guild, session.user, f"image {choice}", record.job_id, "from the web gallery")

    await asyncio.to_thread(change)
    raise web.HTTPSeeOther("/gallery" if wanted == jobs.DELETED else f"/jobs/{record.job_id}")


# -- Vary (Region) ---------------------------------------------------------------------------------------------


async def region_page(request: web.Request) -> web.StreamResponse:
    _, record = await viewable(request)
    if record.state != jobs.DONE:
        raise web.HTTPNotFound(text="This job has no finished image to repaint.")
    try:
        index = max(1, min(int(request.query.get("index", "1")), gallery.image_count(record)))
    except ValueError:
        index = 1
    return render(request, "region.html", {"job": record, "index": index, "count": gallery.image_count(record)})


async def region_submit(request: web.Request) -> web.StreamResponse:
    session, record = await viewable(request)
    services = request.app[SERVICES]
    form = await request.post()
    try:
        index = int(str(form.get("index", "1")))
    except ValueError:
        raise web.HTTPBadRequest(text="index must be a number") from None
    job_id = await asyncio.to_thread(region.submit, services.deps, session, record, index,
                                     str(form.get("prompt", "")), str(form.get("mask", "")))
    return started(request, job_id)


# -- admins and Prometheus ---------------------------------------------------------------------------------------


async def admin_page(request: web.Request) -> web.StreamResponse:
    session = signed_in(request)
    services = request.app[SERVICES]
    if not services.is_admin(session):
        log.warning("member %s refused the admin dashboard of server %s", session.user, session.guild)
        raise web.HTTPForbidden(text="The dashboard is for this server's admins (Manage Server).")
    board = await asyncio.to_thread(admin.dashboard, services.conn, services.deps.tiers, session.guild)
    return render(request, "admin.html", {"board": board, "chart": admin.usage_chart(board.usage)})


async def metrics_page(request: web.Request) -> web.StreamResponse:
    body = await asyncio.to_thread(metrics.exposition, request.app[SERVICES].conn)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
