"""The partner page at /portal/: a person signs in with a partner client's id and secret and works on
that partner's items (read, acknowledge, comment, move status, attach a file).

Server-rendered (Jinja2). The session is a signed, expiring cookie (audience "portal", so it is never
accepted as an API bearer token) that signing out revokes; every form carries a CSRF token derived
from it, the sign-in form a login CSRF token (sessions.py). Failed sign-ins share the token
endpoint's throttle (429 + Retry-After). Item bodies are rendered as sanitised markdown
(rich_text.py) and every page carries a Content-Security-Policy that allows no script at all.
Actions go through the same :class:`service.Store` calls as the API, so rules, versions and events
are identical.

The list filters by status and by run: ``/portal/?dag_id=&run_id=`` lists the partner's items whose
metadata names that Airflow run (the target of the bulk post operator's "Trading Grid items" link);
signing in from such a page lands back on it.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from .auth import Principal, TokenService
from .rich_text import render_markdown
from .service import TRANSITIONS, ApiError, Store, safe_content_type, safe_filename
from .sessions import LOGIN_COOKIE, SESSION_COOKIE, PortalSessions, from_this_origin
from .throttle import LoginThrottle, Throttled

LIST_PAGE_MAX = 200  # items listed, newest first
RUN_PAGE_MAX = 1000  # items listed for one run
# No script, no plugin, no foreign images or form targets: even markup that slipped through could not act.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
ACTION_LABELS = {"acknowledged": "Acknowledge", "in_progress": "Start work", "disputed": "Dispute",
                 "resolved": "Resolve", "closed": "Close", "open": "Reopen"}
NOTICES = {
    "acknowledged": "Item acknowledged.",
    "commented": "Comment posted.",
    "moved": "Status changed.",
    "attached": "File attached.",
    "bad_login": "Unknown partner client or wrong secret.",
    "not_partner": "This page is for partner clients; enterprise clients use the API.",
    "expired": "Your session has ended; please sign in again.",
    "csrf": "The form was stale; please try again.",
    "login_csrf": "The sign-in form was stale or came from another site; please sign in here.",
    "throttled": "Too many failed sign-ins; please wait a little and try again.",
    "illegal_transition": "That status change is not allowed from the item's current status.",
    "payload_too_large": "The file is larger than the sandbox accepts.",
    "sha256_mismatch": "The file does not match the given SHA-256.",
    "empty": "Nothing to post: the text was empty.",
    "no_file": "Choose a file first.",
}


def build_portal(app: FastAPI, store: Store, tokens: TokenService, throttle: LoginThrottle) -> None:
    templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
    # "2026-11-25T23:32:44.678526Z" -> "2026-11-25 23:32 UTC": people read minutes, not microseconds.
    templates.env.filters["when"] = lambda iso: f"{iso[:10]} {iso[11:16]} UTC" if iso else ""
    templates.env.filters["markdown"] = render_markdown
    sessions = PortalSessions(store, tokens)

    def session(request: Request) -> tuple[Principal, str] | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        who = sessions.current(cookie)
        return (who, cookie) if who is not None else None

    csrf_token = sessions.form_token

    def redirect(url: str, notice: str | None = None) -> RedirectResponse:
        return RedirectResponse(url + (f"?notice={quote(notice)}" if notice else ""), status_code=303)

    def render(request: Request, name: str, status_code: int = 200, notice: str | None = None,
               **context) -> HTMLResponse:
        notice = notice or request.query_params.get("notice")
        return templates.TemplateResponse(request, name, status_code=status_code, headers=SECURITY_HEADERS, context={
            "notice": NOTICES.get(notice) if notice else None,
            "notice_ok": notice in ("acknowledged", "commented", "moved", "attached"),
            "partner_name": None, **context})

    def login_page(request: Request, status_code: int = 200, notice: str | None = None) -> HTMLResponse:
        """The sign-in form with its login CSRF token; the nonce it is bound to goes in a cookie."""
        nonce = sessions.login_nonce(request.cookies.get(LOGIN_COOKIE))
        response = render(request, "login.html", status_code, notice, login_csrf=sessions.login_token(nonce))
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path="/portal")
        return response

    def item_url(item_id: str) -> str:
        return f"/portal/items/{quote(item_id)}"

    @app.get("/portal", include_in_schema=False)
    async def portal_root():
        return RedirectResponse("/portal/", status_code=307)

    @app.get("/portal/", include_in_schema=False, response_class=HTMLResponse)
    def portal_home(request: Request, status: str | None = None, dag_id: str | None = None,
                    run_id: str | None = None):
        current = session(request)
        if current is None:
            return login_page(request)
        who, cookie = current
        status = status if status in TRANSITIONS else None
        run = {k: v for k, v in (("dag_id", dag_id), ("run_id", run_id)) if v}
        items = newest_items(who, status, run, RUN_PAGE_MAX if run else LIST_PAGE_MAX)
        return render(request, "items.html", items=items, who=who, csrf=csrf_token(cookie), status=status,
                      run=run, statuses=list(TRANSITIONS), partner_name=store.seed.partners.get(who.partner_id))

    def newest_items(who: Principal, status: str | None, run: dict[str, str], limit: int) -> list[dict]:
        """The signed-in partner's most recently updated items (newest first), optionally only those whose
        metadata names a run (the Airflow "Trading Grid items" link). The store lists oldest first and
        filters on columns only, so this pages through the partner's items and keeps the tail."""
        kept: deque[dict] = deque(maxlen=limit)
        cursor = None
        while True:
            page, cursor = store.list_items(who, status=status, limit=200, cursor=cursor)
            kept.extend(i for i in page if all((i.get("metadata") or {}).get(k) == v for k, v in run.items()))
            if cursor is None:  # an item updated while paging shows up twice: keep its last state
                return sorted({i["id"]: i for i in kept}.values(), key=lambda i: i["updated_at"], reverse=True)

    def back_to_list(request: Request) -> str:
        """The list page the sign-in form was shown on, filters kept (a link into a run's items);
        only its path and query are used, and only under /portal/, so it cannot redirect elsewhere."""
        referer = urlsplit(request.headers.get("referer") or "")
        if referer.path == "/portal/" and referer.query and "notice=" not in referer.query:
            return "/portal/?" + referer.query
        return "/portal/"

    @app.post("/portal/login", include_in_schema=False)
    def portal_login(request: Request, client_id: Annotated[str, Form()] = "",
                     client_secret: Annotated[str, Form()] = "", login_csrf: Annotated[str, Form()] = ""):
        if not (from_this_origin(request.headers, request.url.scheme)
                and sessions.login_token_ok(request.cookies.get(LOGIN_COOKIE), login_csrf)):
            return login_page(request, 403, "login_csrf")
        address = request.client.host if request.client else None
        try:
            client = throttle.attempt(client_id, address, lambda: tokens.authenticate_client(client_id, client_secret))
        except Throttled as exc:
            response = login_page(request, 429, "throttled")
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if client is None:
            return redirect("/portal/", "bad_login")
        if client.kind != "partner":
            return redirect("/portal/", "not_partner")
        token, ttl = sessions.open(client)
        response = redirect(back_to_list(request))
        response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="strict", path="/portal")
        response.delete_cookie(LOGIN_COOKIE, path="/portal")  # a fresh nonce for the next sign-in
        return response

    @app.post("/portal/logout", include_in_schema=False)
    def portal_logout(request: Request, csrf: Annotated[str, Form()] = ""):
        current = session(request)
        if current is not None:
            if not (from_this_origin(request.headers, request.url.scheme) and sessions.form_token_ok(current[1], csrf)):
                return redirect("/portal/", "csrf")
            sessions.revoke(current[1])
        response = redirect("/portal/")
        response.delete_cookie(SESSION_COOKIE, path="/portal")
        return response

    @app.get("/portal/items/{item_id}", include_in_schema=False, response_class=HTMLResponse)
    def portal_item(request: Request, item_id: str):
        current = session(request)
        if current is None:
            return redirect("/portal/", "expired")
        who, cookie = current
        try:
            item = store.get_item(who, item_id)
        except ApiError as exc:
            return render(request, "not_found.html", who=who, csrf=csrf_token(cookie), status_code=exc.status)
        return render(
            request, "item.html", item=item, who=who, csrf=csrf_token(cookie),
            comments=store.list_comments(who, item_id), attachments=store.list_attachments(who, item_id),
            moves=[(to, ACTION_LABELS[to]) for to in sorted(TRANSITIONS[item["status"]]) if to != "acknowledged"],
            can_ack=item["acknowledged_at"] is None and item["status"] != "closed",
            partner_name=store.seed.partners.get(who.partner_id),
        )

    def clean(text: str) -> str | None:
        """Form text as stored: trimmed, without NUL characters (no database column holds them)."""
        return text.replace("\x00", "").strip() or None

    def act(request: Request, item_id: str, csrf: str, action, done: str) -> RedirectResponse:
        """Run one partner action on an item; answer with a redirect carrying a notice code."""
        current = session(request)
        if current is None:
            return redirect("/portal/", "expired")
        who, cookie = current
        if not (from_this_origin(request.headers, request.url.scheme) and sessions.form_token_ok(cookie, csrf)):
            return redirect(item_url(item_id), "csrf")
        try:
            action(who)
        except ApiError as exc:
            if exc.status == 404:
                return redirect("/portal/")
            return redirect(item_url(item_id), exc.code)
        return redirect(item_url(item_id), done)

    @app.post("/portal/items/{item_id}/acknowledge", include_in_schema=False)
    def portal_acknowledge(request: Request, item_id: str, csrf: Annotated[str, Form()] = "",
                           note: Annotated[str, Form()] = ""):
        return act(request, item_id, csrf, lambda who: store.acknowledge(who, item_id, clean(note)), "acknowledged")

    @app.post("/portal/items/{item_id}/comment", include_in_schema=False)
    def portal_comment(request: Request, item_id: str, csrf: Annotated[str, Form()] = "",
                       body: Annotated[str, Form()] = ""):
        text = clean(body)
        if text is None:
            return redirect(item_url(item_id), "empty")
        return act(request, item_id, csrf, lambda who: store.add_comment(who, item_id, text, "partner"), "commented")

    @app.post("/portal/items/{item_id}/transition", include_in_schema=False)
    def portal_transition(request: Request, item_id: str, csrf: Annotated[str, Form()] = "",
                          to: Annotated[str, Form()] = "", comment: Annotated[str, Form()] = ""):
        if to not in TRANSITIONS:
            return redirect(item_url(item_id), "illegal_transition")
        return act(request, item_id, csrf, lambda who: store.transition(who, item_id, to, clean(comment)), "moved")

    @app.post("/portal/items/{item_id}/attach", include_in_schema=False)
    def portal_attach(request: Request, item_id: str, csrf: Annotated[str, Form()] = "",
                      file: Annotated[UploadFile | None, File()] = None):
        if file is None or not file.filename:
            return redirect(item_url(item_id), "no_file")
        content = file.file.read(store.seed.attachment_max_bytes + 1)
        return act(request, item_id, csrf, lambda who: store.add_attachment(
            who, item_id, safe_filename(file.filename), safe_content_type(file.content_type), content, None), "attached")

    @app.get("/portal/items/{item_id}/attachments/{attachment_id}", include_in_schema=False)
    def portal_download(request: Request, item_id: str, attachment_id: str):
        current = session(request)
        if current is None:
            return redirect("/portal/", "expired")
        try:
            meta, content = store.attachment_content(current[0], item_id, attachment_id)
        except ApiError:
            return Response("not found", status_code=404, media_type="text/plain")
        filename = meta["filename"].replace('"', "").encode("latin-1", "replace").decode("latin-1")
        return Response(content, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
