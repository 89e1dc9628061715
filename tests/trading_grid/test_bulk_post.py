"""The bulk post (trading_grid.operators.bulk, trading_grid.posts) against the real sandbox over HTTP.

- The data classes: round trips through dicts (what XCom carries), bad input rejected with the slot's
  index, placeholders of follow-up comments filled without touching other braces.
- an action's ``update`` (title prefix, metadata) is a PATCH with If-Match applied once; a change
  by someone else between our read and our PATCH (a real 412) is read again and the prefix goes on
  the title as it is then;
- :func:`post_items`: 200 posts with inline files, comments and follow-up actions under 503/429/
  dropped answers → exactly 200 distinct items; the same call again creates nothing, attaches and
  comments nothing twice, applies the actions once.
- The operator run for real with ``dag.test()`` (slow): an XComArg of an upstream @task, a literal
  list whose strings contain ``{{``, an empty list (no HTTP: its connection points at a closed port),
  a mapped task group; twice, under faults. Asserts return values, the "Trading Grid items" link as
  the task runner stored it, bodies posted verbatim, and the run's portal page as each partner sees it.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from urllib.parse import quote

import pytest
import requests

from tests.trading_grid.conftest import FAST_RETRIES, conn_env_name, make_payload
from tests.trading_grid.test_dag_operators import airflow_home  # noqa: F401 - the migrated AIRFLOW_HOME fixture
from trading_grid.hooks.trading_grid import TradingGridHook
from trading_grid.links import run_items_url
from trading_grid.operators.bulk import TradingGridBulkPostOperator, post_items
from trading_grid.posts import (
    MAX_INLINE_BYTES,
    InlineAttachment,
    ItemAction,
    ItemPost,
    ItemUpdate,
    PostComment,
    PostedItem,
    parse_all,
)

FAULTS = dict(error_rate=0.15, rate_limit_rate=0.1, retry_after_seconds=0, drop_after_commit_rate=0.1)


# ------------------------------------------------------------------------------------------ data
def test_posts_round_trip_through_dicts_text_and_base64():
    post = ItemPost(
        make_payload(subject="rt"),
        attachments=(InlineAttachment("report {{x}}.json", b'{"ok": false}', "application/json"),
                     InlineAttachment("scan.bin", b"\xff\x00\x10")),
        comments=(PostComment("Checks failed.", "internal"),),
        transition="in_progress",
        actions=(ItemAction("itm_1", comment="Resolved by {posted_item_url}", to_status="resolved"),),
    )
    data = json.loads(json.dumps(post.to_dict()))  # what XCom stores
    assert data["attachments"][0]["text"] == '{"ok": false}' and "base64" not in data["attachments"][0]
    assert data["attachments"][1]["base64"] == "/wAQ" and "text" not in data["attachments"][1]
    assert ItemPost.from_dict(data) == post
    item = {"id": "itm_9", "external_ref": "r", "status": "open", "updated_at": "t", "acknowledged_at": None}
    posted = PostedItem.from_item(item, created=True, url="u")
    assert PostedItem.from_dict(json.loads(json.dumps(posted.to_dict()))) == posted


def test_follow_up_placeholders_are_replaced_and_other_braces_kept():
    action = ItemAction("itm_case", comment="File {{name}} {0} resolved by {posted_item_id}: {posted_item_url}")
    filled = action.for_posted_item("itm_new", "http://tg/portal/items/itm_new")
    assert filled.comment == "File {{name}} {0} resolved by itm_new: http://tg/portal/items/itm_new"
    assert filled.item_id == "itm_case"


@pytest.mark.parametrize(
    ("posts", "message"),
    [
        ("not a list", "posts must be a list"),
        ([{"payload": {"title": "no ref"}}], r"posts\[0\]: post payload needs 'external_ref'"),
        ([{"payload": {"external_ref": "a"}}, {"payload": {"external_ref": "b"},
          "attachments": [{"filename": "x", "text": "t", "base64": "dA=="}]}], r"posts\[1\]: .*exactly one of"),
        ([{"payload": {"external_ref": "a"}, "attachments": [{"filename": "x", "base64": "%%%"}]}], "not valid base64"),
        ([{"payload": {"external_ref": "a"}, "comments": [{"body": "x", "visibility": "public"}]}], "visibility"),
        ([{"payload": {"external_ref": "a"}, "actions": [{"item_id": "itm_1"}]}], "a comment, a to_status or both"),
    ],
)
def test_bad_posts_are_rejected_with_their_slot(posts, message):
    with pytest.raises(ValueError, match=message):
        parse_all(posts, ItemPost.from_dict, "posts")


def test_inline_files_are_bounded():
    with pytest.raises(ValueError, match="inline files are limited"):
        InlineAttachment("big.bin", b"x" * (MAX_INLINE_BYTES + 1))


def test_run_items_url_encodes_the_run_and_names_bad_placeholders():
    url = run_items_url("http://tg.example/", "dd", "manual__2026-12-01T10:00:00+00:00")
    assert url == "http://tg.example/portal/?dag_id=dd&run_id=manual__2026-12-01T10%3A00%3A00%2B00%3A00"
    assert run_items_url("https://x", "d", "r", "{ui_base_url}/search?q=run:{run_id}") == "https://x/search?q=run:r"
    with pytest.raises(ValueError, match=r"\{ui_base_url\}, \{dag_id\} and \{run_id\}"):
        run_items_url("https://x", "d", "r", "{ui_base_url}/{partner}")


# ------------------------------------------------------------------------------------------ operator, in process
def test_empty_posts_return_nothing_without_a_hook():
    op = TradingGridBulkPostOperator(task_id="post_none", posts=[], trading_grid_conn_id="no_such_connection")
    op.render_template_fields({})  # what the task runner does before execute
    assert op.execute({}) == []
    assert "hook" not in op.__dict__  # no connection looked up, no HTTP


def test_literal_lists_are_data_not_templates():
    op = TradingGridBulkPostOperator(task_id="t", posts=[{"payload": {"external_ref": "a", "body": "{{ ds }}"}}])
    rendered = op.render_template(op.posts, {"ds": "2026-12-01"})
    assert rendered == [{"payload": {"external_ref": "a", "body": "{{ ds }}"}}]


def test_a_bad_items_url_template_fails_before_anything_is_posted(tg, monkeypatch):
    conn = json.loads(tg.airflow_conn_json())
    conn["extra"]["ui_items_url_template"] = "{ui_base_url}/items?owner={owner}"
    monkeypatch.setenv(conn_env_name("tg_bad_template"), json.dumps(conn))
    payload = make_payload()
    op = TradingGridBulkPostOperator(task_id="t", posts=[ItemPost(payload).to_dict()], trading_grid_conn_id="tg_bad_template")
    op.render_template_fields({"run_id": "manual__1"})
    with pytest.raises(ValueError, match="ui_items_url_template"):
        op.execute({"run_id": "manual__1"})
    with TradingGridHook(retry_policy=FAST_RETRIES) as hook:
        assert hook.find_by_external_ref(payload["external_ref"]) is None


# ------------------------------------------------------------------------------------------ post_items, 200 under faults
def _report(n: int) -> bytes:
    return json.dumps({"file": f"INV-{n}.csv", "rows": n, "passed": True}).encode()


def _bulk_posts(run: str, cases: list[str]) -> list[ItemPost]:
    posts = []
    for n in range(200):
        attachments = [InlineAttachment(f"check-report-{n}.json", _report(n), "application/json")]
        if n % 20 == 0:
            attachments.append(InlineAttachment(f"scan-{n}.bin", bytes([n % 256, 0, 255]) * 10))
        actions = ()
        if n < len(cases):  # the corrected file resolves the open case of the same document
            actions = (ItemAction(cases[n], comment=f"Resolved by INV-{n}.csv: {{posted_item_url}}", to_status="resolved"),)
        posts.append(ItemPost(
            make_payload(subject=f"{run}-{n}", metadata={"file_name": f"INV-{n}.csv", "run_id": run, "dag_id": "bulk"}),
            attachments=tuple(attachments),
            comments=(PostComment(f"INV-{n}.csv passed its checks."),),
            actions=actions,
        ))
    return posts


@pytest.mark.slow
def test_200_posts_under_faults_converge_and_a_rerun_posts_nothing_twice(tg, hook):
    run = f"bulk-{uuid.uuid4().hex[:8]}"
    cases = [hook.create_item(make_payload(subject=f"{run}-case-{n}", reason="validation_failed", type="case",
                                           category="validation_failure"))[0]["id"] for n in range(4)]
    escalated = hook.create_item(make_payload(subject=f"{run}-escalated", type="case", category="validation_failure"))[0]
    posts = _bulk_posts(run, cases)
    actions = [ItemAction(escalated["id"], comment="Looking into it (internal).", visibility="internal", to_status="in_progress")]

    tg.set_faults(**FAULTS, seed=11)
    first = post_items(hook, posts, actions, max_concurrency=16)
    recovered_before = hook.stats["recovered"]
    second = post_items(hook, posts, actions, max_concurrency=16)  # the retry / cleared task
    recovered_in_rerun = hook.stats["recovered"] - recovered_before
    tg.clear_faults()

    assert first.errors == [] and second.errors == []
    assert hook.stats["retries"] > 50 and recovered_before > 0  # the faults really happened
    assert [p.external_ref for p in first.posted] == [p.external_ref for p in posts]
    assert [p.created for p in first.posted] == [True] * 200
    # A rerun creates nothing. The hook reports created=True only where a replay's answer was lost
    # and the identical item was found (it cannot tell that item from its own: documented there).
    assert sum(p.created for p in second.posted) <= recovered_in_rerun
    ids = [p.item_id for p in first.posted]
    assert len(set(ids)) == 200 and [p.item_id for p in second.posted] == ids
    assert all(p.url == f"{tg.base_url}/portal/items/{p.item_id}" for p in first.posted)

    listed = [i for i in hook.list_items(partner_id="P-ACME") if i["metadata"].get("run_id") == run]
    assert sorted(i["id"] for i in listed) == sorted(ids)  # exactly 200 items, no duplicate
    for post, posted in zip(posts, second.posted):
        attachments = hook.list_attachments(posted.item_id)
        assert sorted(a["sha256"] for a in attachments) == sorted(a.sha256 for a in post.attachments)
        assert [c["body"] for c in hook.list_comments(posted.item_id)] == [post.comments[0].body]
    fresh = hook.get_item(ids[0])
    assert (second.posted[0].status, second.posted[0].updated_at) == (fresh["status"], fresh["updated_at"])

    for n, case_id in enumerate(cases):
        assert hook.get_item(case_id)["status"] == "resolved"
        bodies = [c["body"] for c in hook.list_comments(case_id)]
        assert bodies == [f"Resolved by INV-{n}.csv: {tg.base_url}/portal/items/{ids[n]}"]
        assert second.follow_ups[n][0].status == "resolved"
    assert hook.get_item(escalated["id"])["status"] == "in_progress"
    assert [c["body"] for c in hook.list_comments(escalated["id"])] == ["Looking into it (internal)."]
    assert second.actions[0].status == "in_progress"


def test_failed_slots_are_reported_after_every_other_slot_was_done(tg, hook):
    good, bad_partner = make_payload(), make_payload(partner_id="P-NOBODY")
    follow_up = ItemAction("itm_does_not_exist", comment="never lands", to_status="resolved")
    result = post_items(hook, [ItemPost(bad_partner), ItemPost(good, comments=(PostComment("kept"),), actions=(follow_up,))])
    assert result.posted[0] is None and result.posted[1] is not None and result.posted[1].created
    assert [c["body"] for c in hook.list_comments(result.posted[1].item_id)] == ["kept"]
    assert result.errors[0].startswith(f"posts[0] {bad_partner['external_ref']}: create: TradingGridValidationError")
    # The follow-up's comment and its move were both attempted, and both are reported.
    assert [e.split(": ")[1:3] for e in result.errors[1:]] == [["comment", "TradingGridNotFound"],
                                                             ["move to resolved", "TradingGridNotFound"]]
    assert all(e.startswith(f"posts[1] {good['external_ref']} actions[0]") for e in result.errors[1:])


def test_an_update_prefixes_the_title_once_merges_metadata_and_rereads_on_412(tg, hook, monkeypatch):
    action = ItemAction("itm_1", comment="Replaced.", update=ItemUpdate("[Superseded] ", {"by": 2}), to_status="resolved")
    assert ItemAction.from_dict(json.loads(json.dumps(action.to_dict()))) == action
    with pytest.raises(ValueError, match="update: give a title_prefix, metadata or both"):
        ItemAction.from_dict({"item_id": "itm_1", "update": {}})

    old = hook.create_item(make_payload(subject=f"upd-{uuid.uuid4().hex[:8]}", type="case", title="Price list p1.csv"))[0]
    with TradingGridHook(retry_policy=FAST_RETRIES) as colleague:
        real_update, raced = hook.update_item, []

        def racing_update(item_id, changes, **kwargs):
            if not raced:  # someone edits the item between our read and our PATCH: the version moves on
                raced.append(colleague.update_item(item_id, {"title": "Price list p1.csv (checked)"}))
            return real_update(item_id, changes, **kwargs)

        monkeypatch.setattr(hook, "update_item", racing_update)
        update = ItemAction(old["id"], comment="Replaced by p2.csv.", to_status="resolved",
                            update=ItemUpdate("[Superseded] ", {"superseded_by_file": "p2.csv"}))
        first = post_items(hook, [], [update])
        second = post_items(hook, [], [update])  # a rerun changes nothing more
    assert first.errors == [] and second.errors == [] and len(raced) == 1
    item = hook.get_item(old["id"])
    assert item["title"] == "[Superseded] Price list p1.csv (checked)" and item["status"] == "resolved"
    assert item["metadata"]["superseded_by_file"] == "p2.csv" and item["metadata"]["file_name"]  # merged, kept
    assert item["version"] == raced[0]["version"] + 2  # our PATCH, then the move: no second PATCH
    assert [c["body"] for c in hook.list_comments(old["id"])] == ["Replaced by p2.csv."]
    assert second.actions[0].status == "resolved"


# ------------------------------------------------------------------------------------------ the operator in a DAG run
DAG_FILE = textwrap.dedent(
    '''
    """Test DAG: the bulk post operator fed by @tasks, with literals, empty input and a mapped task group."""
    import json
    import os

    from airflow.sdk import DAG, task, task_group
    from trading_grid.operators.trading_grid import TradingGridBulkPostOperator
    from trading_grid.posts import InlineAttachment, ItemAction, ItemPost, PostComment
    from trading_grid.refs import external_ref

    TAG = os.environ.get("TG_TEST_TAG", "parse")
    CASE_ID = os.environ.get("TG_TEST_CASE_ID", "itm_x")
    MANY = 30


    def payload(partner_id, subject, **over):
        body = {"external_ref": external_ref("document_delivery", partner_id, f"{TAG}-{subject}", "notify"),
                "partner_id": partner_id, "type": "notification", "category": "document_delivery",
                "title": f"{TAG} {subject}", "body": "A file was delivered.", "severity": "info",
                "requires_ack": True, "metadata": {"file_name": f"{subject}.csv"}}
        body.update(over)
        return body


    with DAG("tg_bulk_post_test", schedule=None) as dag:
        @task
        def make_posts():
            posts = [ItemPost(payload("P-ACME", f"many-{n}"),
                              attachments=(InlineAttachment(f"report-{n}.json", b'{"n": %d}' % n, "application/json"),),
                              comments=(PostComment(f"Checked file {n}."),)).to_dict() for n in range(MANY)]
            # A partner's file name may contain Jinja syntax: it must arrive as it is.
            posts[0]["payload"]["body"] = "Partner file {{ weird }}.csv, {% raw %}"
            posts[0]["attachments"][0]["filename"] = "{{ weird }}.json"
            return posts

        TradingGridBulkPostOperator(
            task_id="post_many", posts=make_posts(), max_concurrency=8,
            actions=[ItemAction(CASE_ID, comment="Seen in run {{ run_id }}", visibility="internal").to_dict()],
        )
        TradingGridBulkPostOperator(task_id="post_one", posts=[ItemPost(payload("P-ACME", "one", body="Due {{ ds }}")).to_dict()])
        TradingGridBulkPostOperator(task_id="post_none", posts=[], trading_grid_conn_id="tg_unreachable")

        @task
        def partner_posts(partner_id):
            return [ItemPost(payload(partner_id, f"group-{n}")).to_dict() for n in range(3)]

        @task_group
        def per_partner(partner_id):
            TradingGridBulkPostOperator(task_id="post", posts=partner_posts(partner_id))

        per_partner.expand(partner_id=["P-ACME", "P-GLOBEX"])

    if __name__ == "__main__":
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        run = dag.test()
        with create_session() as session:
            rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id).all()
            xcoms = {f"{r.task_id}:{r.map_index}:{r.key}": XComModel.deserialize_value(r) for r in rows}
        print("RESULT=" + json.dumps({"state": str(run.state), "run_id": run.run_id, "xcoms": xcoms}, default=str))
    '''
)


@pytest.fixture(scope="module")
def bulk_airflow_home(airflow_home):
    """The migrated temporary AIRFLOW_HOME of test_dag_operators, with this module's DAG file added."""
    home, env = airflow_home
    (home / "dags" / "tg_bulk_post_test.py").write_text(DAG_FILE)
    return home, env


def _conn_json(tg, **extra) -> str:
    conn = json.loads(tg.airflow_conn_json())
    conn["extra"].update(extra)
    return json.dumps(conn)


def _run_dag(airflow_home, tg, tag: str, case_id: str) -> dict:
    home, env = airflow_home
    fast = {"max_attempts": 15, "backoff_base": 0.01, "backoff_max": 0.2, "max_retry_time": 60}
    unreachable = json.loads(_conn_json(tg, retry={"max_attempts": 1}))
    unreachable["port"] = 9  # nothing listens: any request, even for a token, fails the task
    env = {**env, "TG_TEST_TAG": tag, "TG_TEST_CASE_ID": case_id,
           "AIRFLOW_CONN_TRADING_GRID_DEFAULT": _conn_json(tg, retry=fast),
           "AIRFLOW_CONN_TG_UNREACHABLE": json.dumps(unreachable)}
    proc = subprocess.run([sys.executable, str(home / "dags" / "tg_bulk_post_test.py")],
                          env=env, capture_output=True, text=True, timeout=400, cwd=str(home))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT=")).removeprefix("RESULT="))
    assert result["state"].endswith("success"), output[-6000:]
    return result


def _portal_item_ids(tg, partner_id: str, url: str) -> set[str]:
    session = requests.Session()
    login_form = session.get(f"{tg.base_url}/portal/", timeout=30).text  # the sign-in form's CSRF token and cookie
    token = re.search(r'name="login_csrf" value="([^"]+)"', login_form).group(1)
    session.post(f"{tg.base_url}/portal/login",
                 data={**dict(zip(("client_id", "client_secret"), tg.partners[partner_id])), "login_csrf": token})
    page = session.get(url, timeout=30)
    assert page.status_code == 200 and 'id="run-filter"' in page.text
    return set(re.findall(r'data-item-id="([^"]+)"', page.text))


@pytest.mark.slow
def test_operator_in_dag_runs_posts_from_xcom_and_mapped_groups_and_a_rerun_converges(tg, bulk_airflow_home):
    tag = f"dagbulk-{uuid.uuid4().hex[:8]}"
    with TradingGridHook(retry_policy=FAST_RETRIES) as hook:
        case = hook.create_item(make_payload(subject=f"{tag}-case", type="case", category="validation_failure"))[0]
    tg.set_faults(**FAULTS, seed=5)
    first = _run_dag(bulk_airflow_home, tg, tag, case["id"])
    second = _run_dag(bulk_airflow_home, tg, tag, case["id"])
    tg.clear_faults()

    x1, x2 = first["xcoms"], second["xcoms"]
    many1, many2 = x1["post_many:-1:return_value"], x2["post_many:-1:return_value"]
    assert len(many1) == 30 and all(p["created"] for p in many1) and not any(p["created"] for p in many2)
    assert [p["item_id"] for p in many1] == [p["item_id"] for p in many2] and len({p["item_id"] for p in many1}) == 30
    groups = {i: x1[f"per_partner.post:{i}:return_value"] for i in (0, 1)}
    assert [len(groups[0]), len(groups[1])] == [3, 3]
    assert not any(p["created"] for i in (0, 1) for p in x2[f"per_partner.post:{i}:return_value"])
    assert x1["post_none:-1:return_value"] == [] and not x1.get("post_none:-1:_link_TradingGridItemsLink")

    # The extra link as the task runner stored it: one item → its page, several → the run's page.
    one = x1["post_one:-1:return_value"][0]
    assert x1["post_one:-1:_link_TradingGridItemsLink"] == f"{tg.base_url}/portal/items/{one['item_id']}"
    run_url = f"{tg.base_url}/portal/?dag_id=tg_bulk_post_test&run_id={quote(first['run_id'], safe='')}"
    for key in ("post_many:-1", "per_partner.post:0", "per_partner.post:1"):
        assert x1[f"{key}:_link_TradingGridItemsLink"] == run_url

    with TradingGridHook(retry_policy=FAST_RETRIES) as hook:
        # Strings from XCom and from literal lists are posted verbatim (no Jinja rendering).
        assert hook.get_item(many1[0]["item_id"])["body"] == "Partner file {{ weird }}.csv, {% raw %}"
        assert [a["filename"] for a in hook.list_attachments(many1[0]["item_id"])] == ["{{ weird }}.json"]
        assert hook.get_item(one["item_id"])["body"] == "Due {{ ds }}"
        assert [c["body"] for c in hook.list_comments(case["id"])] == ["Seen in run {{ run_id }}"]
        assert all(len(hook.list_attachments(p["item_id"])) == 1 for p in many1[:5])
        assert [c["body"] for c in hook.list_comments(many1[3]["item_id"])] == ["Checked file 3."]
        globex = {hook.get_item(p["item_id"])["partner_id"] for p in groups[1]}
        assert globex == {"P-GLOBEX"}

    # The run's page, as each partner sees it: exactly that partner's items of the run.
    acme_items = {p["item_id"] for p in many1} | {one["item_id"]} | {p["item_id"] for p in groups[0]}
    assert _portal_item_ids(tg, "P-ACME", run_url) == acme_items
    assert _portal_item_ids(tg, "P-GLOBEX", run_url) == {p["item_id"] for p in groups[1]}
