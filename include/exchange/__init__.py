"""The exchange kit: what every use case does with partners, written once.

A use case is its domain logic plus a short DAG on top of these modules (each imported where used;
only :mod:`.sensor` is light enough for a DAG file to import at parse time):

- :mod:`.run`       — :class:`~.run.RunContext` (the one claim-token rule and staging rule),
  :func:`~.run.open_run` (partner, ledger resolved once per task), :func:`~.run.sftp_session`,
  :func:`~.run.poll_until_ready` (the one readiness poll loop), :func:`~.run.fetch_with_retries`,
  :class:`~.run.SessionLost`;
- :mod:`.sensor` / :mod:`.triggers` — the deferrable inbound sensor; folders never count as files;
- :mod:`.cases`     — validation_failure and transfer_failure cases, the check report attached inline,
  as post requests for ``TradingGridBulkPostOperator`` (plugins/trading_grid);
- :mod:`.items`     — ``tg_items``: every TG item any use case created (use case, partner, subject,
  item id, status, acknowledged, last change seen);
- :mod:`.feedback`  — one sync per run from TG's events feed with a stored cursor, handing each use
  case only its own changes (status moves, partner comments, partner attachments);
- :mod:`.outbound`  — files *to* a partner: uploaded under a temporary name then renamed, never over a
  different file, the partner's marker or manifest, recorded in ``sent_files``, pick-up observed;
- :mod:`.journal`   — the append-only journal of what happened to every file and item, and the command
  ``python -m include.exchange.journal --file NAME | --sha256 HEX | --item ID | --partner KEY``.

Usage sketch (an inbound use case's intake task, then its publish tasks)::

    run = open_run(partner_key, RunContext(dag_id=..., run_id=...))
    with lost_on_connection_error(run.partner), sftp_session(run.partner.sftp_conn_id) as sftp:
        inbox = run.inbox(sftp)
        poll_until_ready(run, inbox)                        # claims ready files in the ledger
        fetched, errors = fetch_with_retries(run, inbox, sftp, entries)
        ...domain checks; inbox.archive_many(...) / inbox.quarantine_many(...)...
    posts = [cases.validation_failure_post(run.partner, ...), ...]   # -> XCom -> bulk post operator
    items.remember_items(run.engine, [(posted_item, ItemRecord(...)), ...])
    journal.record(run.engine, [JournalEvent("received", ...), ...])

Rules the kit enforces: a file is claimed by one run (token from dag id + run id) and staged under
``<EXCHANGE_STAGING_DIR>/<dag_id>/<run_id>/<partner>/``; nothing on a partner's server is ever deleted
or overwritten; a timed-out transfer drops the session; every TG item is named by an ``external_ref``
(trading_grid.refs), so reruns converge; a partner's data goes only into that partner's folders.
"""
