"""The web app, `python -m web`: members' gallery, the Vary (Region) editor, the admins' dashboard, `/metrics`.

It reads and writes the same Redis as the bot and the workers, through the same modules (`core.jobs`,
`core.userjobs`, `quotas`, `moderation`, `core.queue`); it never imports the bot or discord.py, and never torch.
Pages render on the server (Jinja2 templates beside this package, a little plain JavaScript in `static/`); no
front-end build step.

    settings.py   WebSettings (WEB_*), built once in __main__ and passed down
    session.py    signed session cookies, CSRF tokens, who is signed in
    oauth.py      "Sign in with Discord": the authorization code flow with state and PKCE, logout
    app.py        the aiohttp application: middlewares (size limits, session, CSRF, errors) and routes
    gallery.py    a member's jobs, filtered and paged; a job's page; access checks
    pages.py      the member-facing routes (thin: each calls gallery/actions/region and renders)
    actions.py    re-roll, V1-V4, U1-U4 through the bot's admission and quotas, then enqueued
    region.py     the Vary (Region) editor's mask: checked, stored, and its job queued
    admin.py      the admins' dashboard
    metrics.py    `/metrics` in Prometheus' text format, from `core.metrics` and the queues
"""
