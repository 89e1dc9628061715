"""The partner page driven in headless Chromium: sign in as a partner, open an item, acknowledge,
comment, dispute, attach; the API sees every change; another partner's item stays invisible."""
from __future__ import annotations

import shutil

import pytest

from .conftest import Api, portal_session

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium is not installed")]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def sign_in(page, base_url: str, client: tuple[str, str]) -> None:
    page.goto(base_url + "/portal/")
    page.fill("#client_id", client[0])
    page.fill("#client_secret", client[1])
    page.click("button[type=submit]")
    page.wait_for_selector("header .who")


def test_partner_works_an_item_in_the_browser(browser, tg_sandbox, enterprise, tmp_path):
    mine = enterprise.create_ok(partner_id="P-ACME", title="ASN 4711 missing", type="case", category="asn_exception")
    theirs = enterprise.create_ok(partner_id="P-GLOBEX", title="Globex only item")
    enterprise.http.post(enterprise.item_url(mine["id"], "comments"), json={"body": "internal note", "visibility": "internal"})

    page = browser.new_page()
    sign_in(page, tg_sandbox.base_url, tg_sandbox.partners["P-ACME"])
    listed = page.locator("#items tbody tr").evaluate_all("rows => rows.map(r => r.dataset.itemId)")
    assert mine["id"] in listed and theirs["id"] not in listed
    assert "Globex only item" not in page.content()

    page.click(f"a[href='/portal/items/{mine['id']}']")
    page.wait_for_selector("#title")
    assert page.text_content("#title") == "ASN 4711 missing"
    assert "internal note" not in page.content()

    page.click("#acknowledge")
    page.wait_for_selector(".notice.ok")
    assert page.text_content("#status") == "acknowledged"

    page.fill("#comment-body", "We are checking the ASN.")
    page.click("#post-comment")
    page.wait_for_selector("text=We are checking the ASN.")

    page.fill("#transition-comment", "Quantities differ from the PO.")
    page.click("#move-disputed")
    page.wait_for_selector(".notice.ok")
    assert page.text_content("#status") == "disputed"

    upload = tmp_path / "evidence.txt"
    upload.write_text("PO 4711 says 12, ASN says 10\n")
    page.set_input_files("#file", str(upload))
    page.click("#attach")
    page.wait_for_selector("#attachments >> text=evidence.txt")

    # The API sees what the person did.
    item = enterprise.get(mine["id"]).json()
    assert item["status"] == "disputed"
    assert item["acknowledged_by"] == tg_sandbox.partners["P-ACME"][0]
    comments = [c["body"] for c in enterprise.http.get(enterprise.item_url(mine["id"], "comments")).json()["comments"]]
    assert comments == ["internal note", "We are checking the ASN.", "Quantities differ from the PO."]
    attachments = enterprise.http.get(enterprise.item_url(mine["id"], "attachments")).json()["attachments"]
    assert [a["filename"] for a in attachments] == ["evidence.txt"]
    kinds = [e["kind"] for e in enterprise.events(item_id=mine["id"])]
    assert kinds == ["item.created", "comment.added", "item.acknowledged", "comment.added", "comment.added",
                     "item.transitioned", "attachment.added"]

    # Resolve from the page, too.
    page.click("#move-resolved")
    page.wait_for_selector(".notice.ok")
    assert enterprise.get(mine["id"]).json()["status"] == "resolved"

    # Another partner's item, opened by URL, is not there.
    response = page.goto(f"{tg_sandbox.base_url}/portal/items/{theirs['id']}")
    assert response.status == 404
    assert "Globex only item" not in page.content()
    page.close()


def test_wrong_secret_and_enterprise_clients_cannot_sign_in(browser, tg_sandbox):
    page = browser.new_page()
    sign_in_attempt = [(tg_sandbox.partners["P-ACME"][0], "wrong"), tg_sandbox.enterprise]
    for client, expected in zip(sign_in_attempt, ["Unknown partner client", "This page is for partner clients"]):
        page.goto(tg_sandbox.base_url + "/portal/")
        page.fill("#client_id", client[0])
        page.fill("#client_secret", client[1])
        page.click("button[type=submit]")
        page.wait_for_selector(".notice")
        assert expected in page.text_content(".notice")
        assert page.locator("#items").count() == 0
    page.close()


def test_forged_form_without_csrf_changes_nothing(tg_sandbox, enterprise):
    item = enterprise.create_ok(partner_id="P-ACME")
    session = portal_session(tg_sandbox, tg_sandbox.partners["P-ACME"])
    resp = session.post(f"{tg_sandbox.base_url}/portal/items/{item['id']}/transition", data={"to": "resolved", "csrf": "x"})
    assert "notice=csrf" in resp.url
    assert enterprise.get(item["id"]).json()["status"] == "open"


def test_run_filter_lists_exactly_the_runs_items_escaped_and_kept_across_sign_in(browser, tg_sandbox, enterprise):
    """The page the Airflow "Trading Grid items" link opens: /portal/?dag_id=&run_id=, signed in there."""
    from urllib.parse import urlencode

    run_id = 'manual__2026-12-01T10:00:00+00:00"><script>window.__xss = 1</script>'
    run = {"dag_id": "document_delivery", "run_id": run_id}
    mine = [enterprise.create_ok(partner_id="P-ACME", title=f"Run item {n}", metadata={**run, "file_name": f"{n}.csv"})
            for n in range(3)]
    enterprise.move(mine[0]["id"], "resolved")
    other_run = enterprise.create_ok(partner_id="P-ACME", title="Other run item",
                                     metadata={"dag_id": "document_delivery", "run_id": "scheduled__x"})
    other_dag = enterprise.create_ok(partner_id="P-ACME", title="Other DAG item", metadata={**run, "dag_id": "catalog_sync"})
    theirs = enterprise.create_ok(partner_id="P-GLOBEX", title="Globex run item", metadata=run)

    page = browser.new_page()
    page.goto(f"{tg_sandbox.base_url}/portal/?{urlencode(run)}")  # the link, before signing in
    page.fill("#client_id", tg_sandbox.partners["P-ACME"][0])
    page.fill("#client_secret", tg_sandbox.partners["P-ACME"][1])
    page.click("button[type=submit]")
    page.wait_for_selector("#run-filter")  # back on the filtered list
    listed = page.locator("#items tbody tr").evaluate_all("rows => rows.map(r => r.dataset.itemId)")
    assert sorted(listed) == sorted(i["id"] for i in mine)
    assert not {other_run["id"], other_dag["id"], theirs["id"]} & set(listed)
    assert page.text_content("#run-run-id") == run_id  # shown as text, not markup
    assert page.evaluate("window.__xss") is None

    page.select_option("#status", "resolved")  # the status filter keeps the run filter
    page.click("text=Filter")
    page.wait_for_selector("#run-filter")
    listed = page.locator("#items tbody tr").evaluate_all("rows => rows.map(r => r.dataset.itemId)")
    assert listed == [mine[0]["id"]]

    page.click("#all-runs")  # drops the run filter, keeps the status
    page.wait_for_selector("#items")
    assert page.locator("#run-filter").count() == 0
    assert "status=resolved" in page.url
    page.close()


def test_hostile_item_body_renders_as_markdown_and_runs_nothing(browser, tg_sandbox, enterprise):
    from .test_rich_text import HOSTILE_BODY

    item = enterprise.create_ok(partner_id="P-ACME", title="Hostile body", body=HOSTILE_BODY)
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, tg_sandbox.base_url, tg_sandbox.partners["P-ACME"])
    response = page.goto(f"{tg_sandbox.base_url}/portal/items/{item['id']}")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page.wait_for_selector("#body strong")  # markdown rendered, not shown raw
    assert page.text_content("#body h1") == "Heading"
    assert "**bold**" not in page.text_content("#body")
    assert "<script>window.__xss = 1</script>" in page.text_content("#body")  # shown as text
    found = page.evaluate("""() => ({
        xss: window.__xss,
        active: [...document.querySelectorAll('#body script, #body img, #body iframe, #body svg, #body style, '
                                             + '#body object, #body embed, #body form')].length,
        handlers: [...document.querySelectorAll('*')].flatMap(el => [...el.attributes].map(a => a.name))
                  .filter(name => name.startsWith('on')),
        protocols: [...document.querySelectorAll('#body a[href]')].map(a => a.protocol),
        rels: [...document.querySelectorAll('#body a[href]')].map(a => a.rel),
    })""")
    assert found["xss"] is None and found["active"] == 0 and found["handlers"] == []
    assert found["protocols"] and set(found["protocols"]) <= {"http:", "https:", "mailto:"}
    assert set(found["rels"]) == {"nofollow noopener noreferrer"}
    for link in page.locator("#body a").all():  # hover everything, nothing fires
        link.hover()
    page.hover("#body")
    assert page.evaluate("window.__xss") is None and dialogs == []
    page.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def attacker_page(base_url: str, client: tuple[str, str], login_csrf: str, nonce: str | None) -> str:
    """An auto-submitting sign-in form for the attacker's own account; ``nonce``: also toss the matching
    login cookie first (possible from any page on the same host, whatever its port)."""
    toss = f"document.cookie = 'tg_portal_login={nonce}; path=/portal';" if nonce else ""
    return f"""<!doctype html><html><body>
<form id="f" method="post" action="{base_url}/portal/login">
  <input name="client_id" value="{client[0]}"><input name="client_secret" value="{client[1]}">
  <input name="login_csrf" value="{login_csrf}">
</form>
<script>{toss} document.getElementById('f').submit();</script></body></html>"""


@pytest.mark.parametrize("origin", ["http://attacker.example", "http://127.0.0.1:{port}"],
                         ids=["cross-site", "same host, other port"])
def test_cross_origin_login_form_sets_no_session(browser, tg_sandbox, origin):
    """Login CSRF: a page elsewhere signs the victim's browser in to the attacker's account. With the
    attacker's own valid token (and, on the same host, its nonce cookie tossed in) it is still refused."""
    import requests

    from .conftest import login_form_token

    attacker = requests.Session()
    token = login_form_token(attacker, tg_sandbox.base_url)
    nonce = attacker.cookies.get("tg_portal_login")
    origin = origin.format(port=free_port())
    context = browser.new_context()
    page = context.new_page()
    page.route(f"{origin}/evil", lambda route: route.fulfill(
        status=200, content_type="text/html",
        body=attacker_page(tg_sandbox.base_url, tg_sandbox.partners["P-GLOBEX"], token,
                           nonce if "127.0.0.1" in origin else None)))
    with page.expect_response(f"{tg_sandbox.base_url}/portal/login") as posted:
        page.goto(f"{origin}/evil")
    assert posted.value.status == 403
    assert "tg_portal" not in {c["name"] for c in context.cookies()}
    page.goto(tg_sandbox.base_url + "/portal/")
    assert page.locator("#client_id").count() == 1  # still signed out
    context.close()


def test_sign_out_in_the_browser_ends_the_session(browser, tg_sandbox):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, tg_sandbox.base_url, tg_sandbox.partners["P-ACME"])
    cookie = next(c for c in context.cookies() if c["name"] == "tg_portal")
    page.click("#sign-out")
    page.wait_for_selector("#client_id")
    replay = browser.new_context()
    replay.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path")}])
    replay_page = replay.new_page()
    replay_page.goto(tg_sandbox.base_url + "/portal/")
    assert replay_page.locator("#client_id").count() == 1  # the copied cookie no longer signs in
    context.close()
    replay.close()
