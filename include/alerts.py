"""Task failure alerts: log the failure and e-mail the people who must act on it.

Used as ``default_args["on_failure_callback"]`` of the project's DAGs. It sits on tasks, not on the
DAG, because the DAG-level failure callback does not fire in some Airflow 3 setups
(apache/airflow#63374). Airflow calls it once a task has failed for good (after its retries).

Recipients: ``ALERT_EMAIL_TO`` (env), else the Airflow Variable ``alert_email_to`` (comma-separated),
plus the registry contacts with role ``alerts`` of the partner the task worked for, if any.
Mail goes through the Airflow connection ``smtp_default`` (host, port, login/password, extra
``{"from_email", "starttls", "ssl"}``) or, without one, ``SMTP_HOST``/``SMTP_PORT`` from the env.

Nothing secret reaches the log or the mail: the exception text goes through :func:`scrub_secrets`
(credentials in URLs, secret-named keys' values in any quoting: key=value, JSON, reprs, YAML, query
strings; PEM blocks; bare TG tokens, JWTs, Bearer values) before it is used, and connection objects
are never rendered. The kit scrubs the texts it puts in the ledger and in TG cases the same way.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SMTP_CONN_ID = "smtp_default"
RECIPIENTS_VARIABLE = "alert_email_to"
DEFAULT_FROM = "airflow-alerts@localhost"

# What a secret's key looks like: client_secret, X-Api-Key, access_token, DB_PASSWORD, Authorization.
# A word that contains one of these, taken whole and never given back (possessive): "[\w-]*word[\w-]*"
# backtracks quadratically on a long word that is not followed by a separator.
_SECRET_KEY = (
    r"(?=[\w-]*?(?:password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key|authorization|credentials?))"
    r"[\w-]++"
)
# ... unless the key names something about the secret, not the secret (token_url, token_type, password_file).
_NOT_A_SECRET_KEY = re.compile(
    r"(?i)[_-](?:url|uri|endpoint|type|ttl|seconds|count|expires(?:_in)?|expiry|length|path|file|name)$"
)
# A secret's value, in every quoting a log line, JSON, a Python repr, YAML or a query string uses.
_SECRET_VALUE = (
    r'\\"(?:[^"\\\n]|\\(?!")[^\n])*(?:\\"|$)'  # \"…\": JSON inside a JSON string
    r'|"(?:[^"\\\n]|\\.)*"?'  # "…" with JSON escapes (unterminated: a truncated text)
    r"|'(?:[^'\\\n]|\\.)*'?"  # '…'
    r"|(?!(?:null|None|true|false)\b)(?![{\[])(?:(?:Bearer|Basic|Token|Digest)\s+)?[^\s'\",;&})\]]+"  # bare
)
_SECRETS = re.compile(
    # An external_ref (tg1:<use case>:<partner>:<subject>:<reason>) is matched first and kept whole: a
    # subject such as "secret-plan" followed by ":notify" is not a key and a value.
    r"(?P<ref>(?<![\w.-])tg1(?::[\w.-]+){4})"
    r"|(?P<pem>-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|\Z))"
    # (The lookbehinds start a match only where a word starts: else every letter of a long word
    # would start a scan to its end, quadratic in the text's length.)
    r"|(?P<url>(?P<scheme>(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@)"
    # YAML or a header dump: a line "password: two words" hides the rest of the line.
    rf"|^(?P<lead>[ \t]*(?:-[ \t]+)?)(?P<ykey>{_SECRET_KEY})(?P<ysep>[ \t]*:[ \t]+)(?P<yvalue>[^\s'\"{{\[][^\n]*)"
    rf"|(?<![\w-])(?P<key>{_SECRET_KEY})(?P<keyquote>\\?['\"])?(?P<sep>\s*[=:]\s*)(?P<value>{_SECRET_VALUE})"
    # Bare tokens: the sandbox's tg1.<payload>.<signature> (also cut short), JWTs, "Bearer <token>".
    r"|(?P<token>(?<![\w.-])tg1\.[\w-]{16,}(?:\.[\w-]*)?"
    r"|(?<![\w.-])eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*)"
    r"|(?P<bearer>\b[Bb]earer\s+)[\w.~+/=-]{8,}",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def _masked_value(value: str) -> str:
    """``***`` in the value's own quoting; an auth scheme (``Bearer``) stays readable."""
    for quote in ('\\"', '"', "'"):
        if value.startswith(quote):
            return f"{quote}***{quote}" if len(value) > len(quote) and value.endswith(quote) else f"{quote}***"
    scheme = re.match(r"(?i)(?:Bearer|Basic|Token|Digest)\s+", value)
    return f"{scheme.group(0)}***" if scheme else "***"


def _mask(match: re.Match) -> str:
    kind = match.lastgroup
    if kind == "ref":
        return match.group(0)
    if kind in ("pem", "token"):
        return "***"
    if kind == "bearer":
        return f"{match.group('bearer')}***"
    if match.group("url"):
        return f"{match.group('scheme')}***@"
    if match.group("ykey"):
        key = match.group("ykey")
        kept = _NOT_A_SECRET_KEY.search(key)
        return match.group(0) if kept else f"{match.group('lead')}{key}{match.group('ysep')}***"
    key = match.group("key")
    if _NOT_A_SECRET_KEY.search(key):
        return match.group(0)
    return f"{key}{match.group('keyquote') or ''}{match.group('sep')}{_masked_value(match.group('value'))}"


def scrub_secrets(text: str) -> str:
    """Return ``text`` with credentials replaced by ``***``.

    Hidden: credentials in URLs; the value of any key naming a password, secret, token, API key,
    private key, credentials or authorization, as ``key=value``, ``key: value``, JSON (also escaped
    inside a JSON string), a Python repr, YAML or a query string, quoted or not; PEM blocks; bare TG
    tokens (``tg1.<payload>.<signature>``), JWTs and ``Bearer <token>``. Kept: external refs
    (``tg1:<use case>:…``, a colon, not a dot), digests, file names, keys about a secret
    (``token_url``, ``token_type``).
    """
    return _SECRETS.sub(_mask, text)


@dataclass(frozen=True)
class FailureSummary:
    """What failed, in words safe to log and to mail."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int | None
    partner_key: str | None
    error: str
    log_url: str | None

    @property
    def subject(self) -> str:
        where = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        partner = f" partner {self.partner_key}" if self.partner_key else ""
        return f"[Airflow] {self.dag_id}.{where} failed{partner}"

    def body(self) -> str:
        lines = [
            f"DAG:       {self.dag_id}",
            f"Task:      {self.task_id} (map index {self.map_index}, try {self.try_number})",
            f"Run:       {self.run_id}",
        ]
        if self.partner_key:
            lines.append(f"Partner:   {self.partner_key}")
        if self.log_url:
            lines.append(f"Log:       {self.log_url}")
        lines += ["", "Error:", self.error]
        return "\n".join(lines) + "\n"


def summarize_failure(context: dict[str, Any]) -> FailureSummary:
    """Pick the facts of a failure out of an Airflow task context, scrubbed of secrets."""
    ti = context.get("task_instance") or context.get("ti")
    exception = context.get("exception")
    error = f"{type(exception).__name__}: {exception}" if exception is not None else "unknown error"
    dag_run = context.get("dag_run")
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "?")
    return FailureSummary(
        dag_id=getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?"),
        task_id=getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", "?"),
        run_id=str(run_id),
        map_index=int(getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1),
        try_number=getattr(ti, "try_number", None),
        partner_key=_partner_key(context),
        error=scrub_secrets(error)[:4000],
        log_url=getattr(ti, "log_url", None),
    )


def _partner_key(context: dict[str, Any]) -> str | None:
    """The partner a mapped task worked for, if its arguments say so."""
    task = context.get("task")
    for source in (getattr(task, "op_kwargs", None), context.get("params")):
        if not isinstance(source, dict):
            continue
        partner = source.get("partner") or source.get("partner_key")
        if isinstance(partner, dict):
            partner = partner.get("key")
        if isinstance(partner, str):
            return partner
    return None


def alert_recipients(partner_key: str | None = None) -> list[str]:
    """Who gets failure mail: ``ALERT_EMAIL_TO``, else Variable ``alert_email_to``, plus partner contacts."""
    raw = os.environ.get("ALERT_EMAIL_TO") or _variable(RECIPIENTS_VARIABLE) or ""
    recipients = [r.strip() for r in raw.split(",") if r.strip()]
    for contact in _partner_alert_contacts(partner_key):
        if contact not in recipients:
            recipients.append(contact)
    return recipients


def _variable(key: str) -> str | None:
    try:
        from airflow.sdk import Variable

        return Variable.get(key, default=None)
    except Exception:  # no Airflow context or no metadata access: the env is the fallback
        return None


def _partner_alert_contacts(partner_key: str | None) -> list[str]:
    if not partner_key:
        return []
    try:
        from include.partners import load_registry

        registry = load_registry()
        partner = registry.get(partner_key) if hasattr(registry, "get") else registry[partner_key]
    except Exception:
        return []
    # Only contacts marked for alerts: the partner's operations people hear of problems through TG
    # cases; internal error text is for us.
    return [c.email for c in getattr(partner, "contacts", []) if getattr(c, "role", "") == "alerts"]


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    login: str | None = None
    password: str | None = None
    from_email: str = DEFAULT_FROM
    starttls: bool = False
    ssl: bool = False
    timeout: float = 30.0


def smtp_settings() -> SmtpSettings | None:
    """SMTP settings from connection ``smtp_default``, else from ``SMTP_HOST``/``SMTP_PORT``; None if neither."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(SMTP_CONN_ID)
    except Exception:
        conn = None
    if conn is not None and conn.host:
        extra = conn.extra_dejson or {}
        return SmtpSettings(
            host=conn.host,
            port=int(conn.port or 25),
            login=conn.login or None,
            password=conn.password or None,
            from_email=extra.get("from_email") or os.environ.get("ALERT_EMAIL_FROM") or DEFAULT_FROM,
            starttls=_truthy(extra.get("starttls")),
            ssl=_truthy(extra.get("ssl")),
            timeout=float(extra.get("timeout", 30)),
        )
    host = os.environ.get("SMTP_HOST")
    if not host:
        return None
    return SmtpSettings(
        host=host,
        port=int(os.environ.get("SMTP_PORT", "25")),
        from_email=os.environ.get("ALERT_EMAIL_FROM", DEFAULT_FROM),
    )


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def send_alert_email(summary: FailureSummary, recipients: list[str], settings: SmtpSettings) -> None:
    """Send one plain-text mail; raise on SMTP errors (the caller decides whether that matters)."""
    import smtplib  # here, not at top: DAG files import this module at parse time
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = summary.subject
    message["From"] = settings.from_email
    message["To"] = ", ".join(recipients)
    message.set_content(summary.body())
    smtp_class = smtplib.SMTP_SSL if settings.ssl else smtplib.SMTP
    with smtp_class(settings.host, settings.port, timeout=settings.timeout) as smtp:
        if settings.starttls and not settings.ssl:
            smtp.starttls()
        if settings.login:
            smtp.login(settings.login, settings.password or "")
        smtp.send_message(message)


def task_failure_alert(context: dict[str, Any]) -> None:
    """``on_failure_callback``: log the failure, then e-mail it. Never raises (a callback must not)."""
    try:
        summary = summarize_failure(context)
    except Exception:  # a broken context must not hide the original failure
        log.exception("Could not summarise the task failure")
        return
    log.error("Task failed: %s — %s", summary.subject, summary.error)
    recipients = alert_recipients(summary.partner_key)
    if not recipients:
        log.warning("No alert recipients (set ALERT_EMAIL_TO or Variable %s): mail not sent", RECIPIENTS_VARIABLE)
        return
    settings = smtp_settings()
    if settings is None:
        log.warning("No SMTP settings (connection %s or SMTP_HOST): mail not sent", SMTP_CONN_ID)
        return
    try:
        send_alert_email(summary, recipients, settings)
    except Exception as exc:  # report, do not mask the task failure with a mail failure
        log.error("Failure alert mail to %s failed: %s", recipients, scrub_secrets(str(exc)))
    else:
        log.info("Failure alert mailed to %s", recipients)
