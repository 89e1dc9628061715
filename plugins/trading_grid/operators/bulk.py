"""Post many Trading Grid items from one task: the way DAGs publish what a run found.

An upstream task computes the posts (:class:`trading_grid.posts.ItemPost` dicts: the item body,
small files inline, comments, a status, follow-up actions on other items) and returns them; this
operator, possibly on another worker, posts them:

1. every payload through the hook's bulk mode (``create_items``, ``max_concurrency`` requests in
   flight, one token, one back-off gate), converging on ``external_ref``;
2. per item that exists, with the same bound on concurrency: its attachments (skipped when the item
   has that sha256), its comments (skipped when identical), its status move, then its follow-up
   actions on other items (only if the post succeeded: a case is resolved only by a notification
   that exists);
3. the operator-level ``actions`` (comment, update and/or status move on items given by id; an
   update is a PATCH with ``If-Match``, read again and recomputed on 412).

Every slot is attempted; failures are collected and raised together at the end
(:class:`~trading_grid.exceptions.TradingGridBulkError`), so a retry re-posts everything and
converges: items on external_ref, attachments on sha256, comments on their text, moves on the
status already reached. Nothing posts twice.

The return value (XCom) is one :class:`~trading_grid.posts.PostedItem` dict per post, in input
order; the actions' results go to XCom key ``trading_grid_actions`` (``{"actions": [...],
"follow_ups": [[...] per post]}``, :class:`~trading_grid.posts.ActionResult` dicts). The "Trading Grid items" extra
link opens the one item the task worked on, or the run's items (:func:`trading_grid.links.run_items_url`).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator, literal
from trading_grid.links import ITEMS_URL_XCOM_KEY, TradingGridItemsLink, run_items_url
from trading_grid.posts import ActionResult, ItemAction, ItemPost, ItemUpdate, PostedItem, parse_all

if TYPE_CHECKING:
    from airflow.sdk import Context
    from trading_grid.hooks.trading_grid import TradingGridHook

ACTIONS_XCOM_KEY = "trading_grid_actions"
T = TypeVar("T")


@dataclass(frozen=True)
class BulkPostResult:
    """What :func:`post_items` did, in input order (None where a create or an action failed), and the errors."""

    posted: list[PostedItem | None]
    follow_ups: list[list[ActionResult | None]]
    actions: list[ActionResult | None]
    errors: list[str] = field(default_factory=list)

    def actions_xcom(self) -> dict[str, Any]:
        """The actions' results for XCom key ``trading_grid_actions``."""
        return {
            "actions": [a.to_dict() if a else None for a in self.actions],
            "follow_ups": [[a.to_dict() if a else None for a in group] for group in self.follow_ups],
        }


class _Step:
    """Runs the steps of one slot, keeping the item's latest known state and the errors met."""

    def __init__(self, hook: TradingGridHook, label: str, item: dict) -> None:
        self.hook, self.label, self.item = hook, label, item
        self.errors: list[str] = []
        self.stale = False  # something changed the item after ``item`` was read

    def attempt(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as exc:  # collected: the task fails after every slot was attempted
            # Hook errors are redacted (no secret, no token); the text says which slot and step failed.
            self.errors.append(f"{self.label}: {what}: {type(exc).__name__}: {exc}")
            return None

    def comment(self, item_id: str, body: str, visibility: str) -> None:
        found = self.attempt("comment", lambda: self.hook.add_comment(item_id, body, visibility=visibility))
        if found is not None and found[1]:
            self.stale = True

    def move(self, item_id: str, to_status: str) -> None:
        moved = self.attempt(f"move to {to_status}", lambda: self.hook.transition(item_id, to_status))
        if moved is not None:
            self.item, self.stale = moved, False

    def refreshed(self, item_id: str) -> dict:
        if self.stale:
            fresh = self.attempt("re-read", lambda: self.hook.get_item(item_id))
            if fresh is not None:
                self.item, self.stale = fresh, False
        return self.item


def _attach_inline(step: _Step, item_id: str, post: ItemPost, workdir: str) -> None:
    """Attach each inline file through a local copy: the hook streams files and dedupes on sha256."""
    for number, attachment in enumerate(post.attachments):
        path = os.path.join(workdir, f"{attachment.sha256}-{number}")
        with open(path, "wb") as fh:
            fh.write(attachment.content)
        try:
            done = step.attempt(
                f"attach {attachment.filename!r}",
                lambda: step.hook.attach_file(
                    item_id, path, filename=attachment.filename, content_type=attachment.content_type
                ),
            )
        finally:
            os.unlink(path)
        if done is not None and done[1]:
            step.stale = True


def _update_item(hook: TradingGridHook, item_id: str, update: ItemUpdate, max_attempts: int = 6) -> dict:
    """Apply ``update`` with ``If-Match``: read, PATCH what is missing; on 412 (changed meanwhile) read
    again and recompute, so a title prefix goes on the title as it is now, once."""
    from trading_grid.exceptions import TradingGridPreconditionFailed

    for _ in range(max_attempts):
        item = hook.get_item(item_id)
        changes = update.changes_for(item)
        if not changes:
            return item
        try:
            return hook.update_item(item_id, changes, version=item["version"], max_precondition_retries=0)
        except TradingGridPreconditionFailed:
            continue
    raise TradingGridPreconditionFailed(f"Trading Grid item {item_id} kept changing; update given up after "
                                        f"{max_attempts} attempts", status=412)


def _apply_action(hook: TradingGridHook, action: ItemAction, label: str) -> tuple[ActionResult | None, list[str]]:
    step = _Step(hook, label, {})
    if action.comment:
        step.comment(action.item_id, action.comment, action.visibility)
    if action.update:
        updated = step.attempt("update", lambda: _update_item(hook, action.item_id, action.update))
        if updated is not None:
            step.item, step.stale = updated, False
    if action.to_status:
        step.move(action.item_id, action.to_status)
    else:
        step.stale = True  # only commented: read the item once for its state
    item = step.refreshed(action.item_id)
    if not item or step.errors:
        return None, step.errors
    result = ActionResult(str(item["id"]), item.get("status"), item.get("updated_at"), hook.item_url(action.item_id))
    return result, step.errors


def _finish_post(
    hook: TradingGridHook, post: ItemPost, item: dict, created: bool, label: str, workdir: str
) -> tuple[PostedItem | None, list[ActionResult | None], list[str]]:
    """Attachments, comments, status move and follow-up actions of one post whose item exists."""
    item_id = str(item["id"])
    url = hook.item_url(item_id)
    step = _Step(hook, label, item)
    _attach_inline(step, item_id, post, workdir)
    for comment in post.comments:
        step.comment(item_id, comment.body, comment.visibility)
    if post.transition:
        step.move(item_id, post.transition)
    posted = PostedItem.from_item(step.refreshed(item_id), created=created, url=url)
    followed: list[ActionResult | None] = []
    errors = list(step.errors)
    for number, action in enumerate(post.actions):
        result, action_errors = _apply_action(hook, action.for_posted_item(item_id, url), f"{label} actions[{number}]")
        followed.append(result)
        errors += action_errors
    return posted, followed, errors


def _in_pool(workers: int, calls: Sequence[Callable[[], T]]) -> list[T]:
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(calls))), thread_name_prefix="tg-bulk-post") as pool:
        return list(pool.map(lambda call: call(), calls))


def _actions_by_item(actions: Sequence[ItemAction]) -> list[list[tuple[int, ItemAction]]]:
    """Actions grouped per item, in input order: two actions on one item must not race each other."""
    groups: dict[str, list[tuple[int, ItemAction]]] = {}
    for index, action in enumerate(actions):
        groups.setdefault(action.item_id, []).append((index, action))
    return list(groups.values())


def post_items(
    hook: TradingGridHook,
    posts: Sequence[ItemPost],
    actions: Sequence[ItemAction] = (),
    *,
    max_concurrency: int = 16,
) -> BulkPostResult:
    """Post ``posts`` and apply ``actions`` (see the module docstring); a failed slot is reported, not raised."""
    posted: list[PostedItem | None] = [None] * len(posts)
    follow_ups: list[list[ActionResult | None]] = [[None] * len(p.actions) for p in posts]
    errors: list[str] = []
    created = hook.create_items([p.payload for p in posts], max_concurrency=max_concurrency, return_exceptions=True)
    with tempfile.TemporaryDirectory(prefix="tg-inline-") as workdir:
        finishing: list[tuple[int, Callable[[], Any]]] = []
        for index, (post, outcome) in enumerate(zip(posts, created)):
            label = f"posts[{index}] {post.external_ref}"
            if isinstance(outcome, Exception):
                errors.append(f"{label}: create: {type(outcome).__name__}: {outcome}")
                continue
            item, was_created = outcome
            if not (post.attachments or post.comments or post.transition or post.actions):
                # Nothing more to do on it (most notifications): no thread hop per item.
                posted[index] = PostedItem.from_item(item, created=was_created, url=hook.item_url(str(item["id"])))
                continue
            finishing.append((index, lambda p=post, i=item, c=was_created, l=label: _finish_post(hook, p, i, c, l, workdir)))
        done = _in_pool(max_concurrency, [call for _, call in finishing])
        for (index, _), (item_result, followed, slot_errors) in zip(finishing, done):
            posted[index], follow_ups[index] = item_result, followed
            errors += slot_errors

    def run_group(group: list[tuple[int, ItemAction]]) -> list[tuple[int, ActionResult | None, list[str]]]:
        return [(i, *_apply_action(hook, action, f"actions[{i}] {action.item_id}")) for i, action in group]

    applied: list[ActionResult | None] = [None] * len(actions)
    for group in _in_pool(max_concurrency, [lambda g=g: run_group(g) for g in _actions_by_item(actions)]):
        for index, action_result, slot_errors in group:
            applied[index] = action_result
            errors += slot_errors
    return BulkPostResult(posted=posted, follow_ups=follow_ups, actions=applied, errors=errors)


class TradingGridBulkPostOperator(BaseOperator):
    """
    Post the items an upstream task computed, with their files, comments and follow-ups (module docstring).

    ``posts`` is a list of :class:`trading_grid.posts.ItemPost` dicts, typically the XComArg of an
    upstream ``@task`` (also inside a mapped task group)::

        {"payload": {"external_ref": "tg1:…", "partner_id": "P-ACME", "type": "notification", …},
         "attachments": [{"filename": "report.json", "content_type": "application/json", "text": "…"}
                         | {"filename": …, "content_type": …, "base64": "…"}],
         "comments": [{"body": "…", "visibility": "partner" | "internal"}],
         "transition": "in_progress" | None,
         "actions": [{"item_id": "itm_…", "comment": "Resolved by {posted_item_url}",
                      "visibility": "partner", "to_status": "resolved",
                      "update": {"title_prefix": "[Superseded] ", "metadata": {…}} | None}]}

    ``actions`` is a list of :class:`trading_grid.posts.ItemAction` dicts applied to existing items.
    Both are templated so an XComArg resolves; their contents are data and never Jinja-rendered (a
    body or file name containing ``{{`` is posted as it is). An empty ``posts`` (and ``actions``) list
    returns ``[]`` without any HTTP request.

    :param posts: the posts (list or XComArg).
    :param actions: actions on existing items (list or XComArg), applied after the posts.
    :param trading_grid_conn_id: the TG connection; its extra ``ui_items_url_template`` shapes the link
        to the run's items (default :data:`trading_grid.links.DEFAULT_ITEMS_URL_TEMPLATE`).
    :param max_concurrency: requests in flight (creates, then the per-item steps).
    :param add_run_metadata: add ``dag_id``, ``run_id``, ``task_id`` to each payload's metadata (where
        not set): what the run's items page filters on.
    :return: one :class:`~trading_grid.posts.PostedItem` dict per post, in input order.
    """

    template_fields: Sequence[str] = ("posts", "actions")
    template_fields_renderers = {"posts": "json", "actions": "json"}
    operator_extra_links = (TradingGridItemsLink(),)
    ui_color = "#bfdbfe"

    def __init__(
        self,
        *,
        posts: Any,
        actions: Any = None,
        trading_grid_conn_id: str = "trading_grid_default",
        max_concurrency: int = 16,
        add_run_metadata: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.posts = _as_data(posts)
        self.actions = _as_data(actions if actions is not None else [])
        self.trading_grid_conn_id = trading_grid_conn_id
        self.max_concurrency = max_concurrency
        self.add_run_metadata = add_run_metadata

    @cached_property
    def hook(self) -> TradingGridHook:
        from trading_grid.hooks.trading_grid import TradingGridHook

        return TradingGridHook(trading_grid_conn_id=self.trading_grid_conn_id, pool_maxsize=max(1, self.max_concurrency))

    def execute(self, context: Context) -> list[dict[str, Any]]:
        posts = parse_all(self.posts, ItemPost.from_dict, "posts")
        actions = parse_all(self.actions, ItemAction.from_dict, "actions")
        if not posts and not actions:
            self.log.info("Nothing to post to Trading Grid")
            return []
        run_id = str(context.get("run_id") or "")
        if self.add_run_metadata:
            posts = [p.with_metadata_defaults(dag_id=self.dag_id, run_id=run_id, task_id=self.task_id) for p in posts]
        run_url = self._run_items_url(run_id)  # before any post: a bad template fails with nothing posted
        try:
            result = post_items(self.hook, posts, actions, max_concurrency=self.max_concurrency)
        finally:
            self.hook.close()
        self._push_link(context, result, run_url)
        context["ti"].xcom_push(key=ACTIONS_XCOM_KEY, value=result.actions_xcom())
        done = sum(p is not None for p in result.posted)
        new = sum(bool(p and p.created) for p in result.posted)
        self.log.info(
            "Trading Grid: %d of %d posts done (%d created, %d existed), %d of %d actions done; %s",
            done, len(posts), new, done - new, sum(a is not None for a in result.actions), len(actions), run_url,
        )
        if result.errors:
            from trading_grid.exceptions import TradingGridBulkError

            raise TradingGridBulkError(
                f"{len(result.errors)} Trading Grid step(s) failed (a retry converges): " + "; ".join(result.errors[:5]),
                results=result.posted,
            )
        return [p.to_dict() for p in result.posted if p is not None]

    def _run_items_url(self, run_id: str) -> str:
        settings = self.hook.settings
        extra = self.hook.get_connection(self.trading_grid_conn_id).extra_dejson or {}
        return run_items_url(settings.ui_base_url or settings.base_url, self.dag_id, run_id, extra.get("ui_items_url_template"))

    def _push_link(self, context: Context, result: BulkPostResult, run_url: str) -> None:
        """The one item posted (or, without posts, acted on), else the run's items page."""
        items = {p.item_id: p.url for p in result.posted if p is not None}
        items = items or {a.item_id: a.url for a in result.actions if a is not None}
        url = next(iter(items.values())) if len(items) == 1 else run_url
        context["ti"].xcom_push(key=ITEMS_URL_XCOM_KEY, value=url)


def _as_data(value: Any) -> Any:
    """A literal list is data: wrap it so Jinja leaves its strings alone; XComArgs and strings are rendered."""
    if isinstance(value, (list, tuple)):
        return literal(list(value))
    return value
