"""The partner registry: who our partners are, where their files land, what they send.

The registry is data (``include/config/partners.yaml``, or the file named by env
``PARTNER_REGISTRY``), validated on load so a typo fails loudly with the path of the bad field,
e.g. ``partners[1].folders.archive: missing``. Unknown keys are rejected for the same reason.
The format is documented in docs/partners.md.

Usage::

    from include.partners import load_registry

    registry = load_registry()
    acme = registry.get("acme")
    acme.folders.inbound                       # '/partners/acme/inbound'
    acme.document_type_for("INV-0001.csv")     # DocumentType(type='invoice', ...)
    registry.by_tg_partner_id("P-ACME")        # the same partner
    acme.settings("catalog_sync")              # CatalogSettings(schedule='@daily', ...), or None
    registry.taking_part("catalog_sync")       # enabled partners with a catalog_sync section

Use-case settings live in a partner's ``use_cases:`` mapping, one section per use case, each
validated by the model :mod:`include.use_cases` names for it; so adding a use case adds no field
here. What every use case shares (folders, readiness, outbound ``delivery``) is on :class:`Partner`.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import TypedDict

from include import use_cases as _use_cases
from include.settings_base import StrictModel

DEFAULT_REGISTRY_PATH = Path(__file__).resolve().parent / "config" / "partners.yaml"
REGISTRY_ENV = "PARTNER_REGISTRY"

#: Names a partner tool writes while a transfer is still running (checked case-insensitively).
DEFAULT_TEMP_SUFFIXES = (".filepart", ".part", ".partial", ".tmp", ".temp", ".crdownload", ".upload", "~")

KNOWN_DOCUMENT_TYPES = (
    "invoice",
    "purchase_order",
    "shipping_manifest",
    "compliance_certificate",
    "product_file",
    "catalog",
    "price_list",
    "promotions",
)

_SLUG = r"^[a-z][a-z0-9_-]{0,62}$"


class RegistryError(ValueError):
    """The partner registry file cannot be read or does not validate; the message names the field."""


#: How a partner marks a file complete: nothing, ``NAME.done`` after NAME, or ``NAME.sha256``
#: holding the hex sha256 of NAME.
Marker = Literal["none", "done", "manifest"]


class Folders(StrictModel):
    """Absolute remote paths of a partner's folders on the exchange SFTP server."""

    inbound: str
    outbound: str
    archive: str
    quarantine: str

    @field_validator("inbound", "outbound", "archive", "quarantine")
    @classmethod
    def _absolute_normalised(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute remote path (start with '/')")
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("must not contain '.' or '..' components")
        if any(ord(ch) < 32 or ch == "\x7f" for ch in value):
            raise ValueError("must not contain control characters")
        normalised = posixpath.normpath(value)
        if normalised == "/":
            raise ValueError("must not be the server root '/'")
        return normalised

    @model_validator(mode="after")
    def _distinct_not_nested(self) -> Folders:
        paths = {"inbound": self.inbound, "outbound": self.outbound, "archive": self.archive,
                 "quarantine": self.quarantine}
        names = list(paths)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pa, pb = paths[a], paths[b]
                if pa == pb:
                    raise ValueError(f"{a} and {b} are the same folder ({pa})")
                # A folder inside another would show archived files in a listing of the parent.
                if pb.startswith(pa + "/") or pa.startswith(pb + "/"):
                    raise ValueError(f"{a} ({pa}) and {b} ({pb}) are nested in each other")
        return self

    def all(self) -> dict[str, str]:
        return {"inbound": self.inbound, "outbound": self.outbound, "archive": self.archive,
                "quarantine": self.quarantine}


class DocumentType(StrictModel):
    """A kind of document a partner sends, recognised by file-name globs."""

    type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    patterns: Annotated[list[str], Field(min_length=1)]
    suite: str | None = None
    format: Literal["csv", "xlsx"] = "csv"

    @field_validator("patterns")
    @classmethod
    def _plain_globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or "/" in pattern:
                raise ValueError(f"pattern {pattern!r} must be a non-empty file-name glob without '/'")
        return value

    @model_validator(mode="after")
    def _default_suite(self) -> DocumentType:
        if self.suite is None:
            object.__setattr__(self, "suite", self.type)
        return self

    def matches(self, file_name: str) -> bool:
        """True when ``file_name`` matches one of the globs (case-insensitive, like most partners expect)."""
        lowered = file_name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.patterns)


class Readiness(StrictModel):
    """When a file in the inbound folder counts as completely written."""

    min_age_seconds: Annotated[int, Field(ge=0)] = 60
    stable_polls: Annotated[int, Field(ge=1)] = 2
    marker: Marker = "none"
    temp_suffixes: tuple[str, ...] = DEFAULT_TEMP_SUFFIXES


class Contact(StrictModel):
    name: str
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    role: str = "operations"


class Delivery(StrictModel):
    """How we put files into the partner's outbound folder (shared by every use case)."""

    marker: Marker = "none"
    pickup: Literal["removes", "keeps"] = "removes"  # the partner removes (or moves) the files it took
    pickup_alert_hours: Annotated[int, Field(gt=0)] = 24  # "not picked up after N hours" becomes visible


# One optional key per use case, each validated by its settings model: errors carry the path
# (use_cases.catalog_sync.ack_deadline_hours) and the value is a plain dict of settings objects.
_UseCaseSections = TypedDict("_UseCaseSections", dict(_use_cases.SETTINGS_MODELS), total=False)
_UseCaseSections.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]


class Partner(StrictModel):
    """One trading partner."""

    key: Annotated[str, Field(pattern=_SLUG)]
    name: Annotated[str, Field(min_length=1)]
    tg_partner_id: Annotated[str, Field(min_length=1)]
    sftp_conn_id: str = "sftp_default"
    enabled: bool = True
    folders: Folders
    document_types: Annotated[list[DocumentType], Field(min_length=1)]
    readiness: Readiness = Field(default_factory=Readiness)
    contacts: list[Contact] = Field(default_factory=list)
    delivery: Delivery = Field(default_factory=Delivery)
    use_cases: _UseCaseSections = Field(default_factory=dict)  # dict[str, BaseModel], see include.use_cases

    @field_validator("document_types")
    @classmethod
    def _unique_types(cls, value: list[DocumentType]) -> list[DocumentType]:
        seen: set[str] = set()
        for doc_type in value:
            if doc_type.type in seen:
                raise ValueError(f"document type {doc_type.type!r} is listed twice")
            seen.add(doc_type.type)
        return value

    @field_validator("use_cases", mode="before")
    @classmethod
    def _known_use_cases(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value  # the TypedDict reports the wrong type
        for name in value:
            if name not in _use_cases.SETTINGS_MODELS:
                raise ValueError(f"unknown use case {name!r}; known: {', '.join(_use_cases.known_use_cases())}")
        # `catalog_sync:` with nothing after it means "takes part, with the defaults".
        return {name: {} if section is None else section for name, section in value.items()}

    def document_type_for(self, file_name: str) -> DocumentType | None:
        """The first document type whose globs match ``file_name`` (registry order), else None."""
        for doc_type in self.document_types:
            if doc_type.matches(file_name):
                return doc_type
        return None

    def settings(self, use_case: str) -> BaseModel | None:
        """This partner's settings for ``use_case`` (its model in include.use_cases), None when it
        does not take part; KeyError for a name that is no use case (a typo must not read as "off")."""
        _use_cases.settings_model(use_case)
        return self.use_cases.get(use_case)

    @property
    def contact_emails(self) -> list[str]:
        return [contact.email for contact in self.contacts]


class Registry(StrictModel):
    """All partners, in file order. Iterate it, or look partners up by key or TG partner id."""

    partners: Annotated[list[Partner], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_keys(self) -> Registry:
        for attr in ("key", "tg_partner_id"):
            seen: dict[str, int] = {}
            for index, partner in enumerate(self.partners):
                value = getattr(partner, attr)
                if value in seen:
                    raise ValueError(f"partners[{index}].{attr}: {value!r} already used by partners[{seen[value]}]")
                seen[value] = index
        # Two partners sharing a folder would see each other's files.
        owners: dict[str, str] = {}
        for partner in self.partners:
            for role, path in partner.folders.all().items():
                for other_path, owner in owners.items():
                    if path == other_path or path.startswith(other_path + "/") or other_path.startswith(path + "/"):
                        raise ValueError(f"partner {partner.key!r} folders.{role} ({path}) overlaps a folder of {owner!r}")
            for path in partner.folders.all().values():
                owners[path] = partner.key
        return self

    def __iter__(self) -> Iterator[Partner]:  # type: ignore[override]
        return iter(self.partners)

    def __len__(self) -> int:
        return len(self.partners)

    def keys(self) -> list[str]:
        return [partner.key for partner in self.partners]

    def get(self, key: str) -> Partner:
        """The partner with registry key ``key``; KeyError names the known keys otherwise."""
        for partner in self.partners:
            if partner.key == key:
                return partner
        raise KeyError(f"unknown partner {key!r}; known: {', '.join(self.keys())}")

    def by_tg_partner_id(self, tg_partner_id: str) -> Partner:
        for partner in self.partners:
            if partner.tg_partner_id == tg_partner_id:
                return partner
        raise KeyError(f"no partner with TG partner id {tg_partner_id!r}")

    def enabled(self) -> list[Partner]:
        return [partner for partner in self.partners if partner.enabled]

    def taking_part(self, use_case: str) -> list[Partner]:
        """Enabled partners with a ``use_cases.<use_case>`` section, in file order."""
        return [partner for partner in self.partners if partner.enabled and partner.settings(use_case) is not None]


def _location(loc: tuple) -> str:
    """('partners', 1, 'folders', 'archive') → 'partners[1].folders.archive'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "<root>"


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        # Model-level validators (after) report at the parent's location.
        loc = _location(tuple(p for p in item["loc"]))
        kind = item["type"]
        if kind == "missing":
            message = "missing"
        elif kind == "extra_forbidden":
            message = "unknown key"
        else:
            message = re.sub(r"^Value error, ", "", item["msg"])
        lines.append(f"{loc}: {message}")
    return f"invalid partner registry {source}:\n  " + "\n  ".join(lines)


def parse_registry(data: object, source: str = "<data>") -> Registry:
    """Validate already-parsed registry data (a dict with a ``partners`` list)."""
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(_format_errors(exc, source)) from None


#: Parsed registries by (path, text): a task loads the registry several times (~25 ms of YAML and
#: validation each); the file is read every time, so an edit is seen by the next load.
_PARSED: dict[tuple[str, str], Registry] = {}


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Load and validate the partner registry.

    :param path: YAML file; default env ``PARTNER_REGISTRY``, else include/config/partners.yaml.
    :raises RegistryError: unreadable file or invalid content; the message names each bad field,
        e.g. ``partners[1].folders.archive: missing``.
    """
    resolved = Path(path or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY_PATH)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read partner registry {resolved}: {exc.strerror}") from None
    key = (str(resolved), text)
    registry = _PARSED.get(key)
    if registry is None:
        registry = _parse_text(resolved, text)
        if len(_PARSED) >= 16:
            _PARSED.clear()
        _PARSED[key] = registry
    return registry


def _parse_text(resolved: Path, text: str) -> Registry:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"partner registry {resolved} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"partner registry {resolved}: top level must be a mapping with 'partners'")
    return parse_registry(data, str(resolved))
