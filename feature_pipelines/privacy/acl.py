"""Redis ACL users generated from the spec: one per consumer of a feature service, least privilege.

A consumer (`FeatureService(consumers=("team:ranking",))`) becomes the Redis user `fs-team-ranking`. It may
run only the read commands the serving client sends (GET, MGET, HGET, HMGET, EXISTS; FCALL_RO only when one
of its views is person-keyed and read by alias), and only on keys it needs, all read-only (`%R~`):
    <ns>:{<view>}:current, <ns>:{<view>}:versions   the pointer and metadata of each view its services read
    <ns>:<view>:*                                    that view's data keys (and alias keys), every version
    fsp:deny:{<entity>}                              the deny hash of each personal entity among those views
Nothing else: no other view, no other namespace, no control key a writer uses (seq, history, pin, lease),
no write, no admin command, no pub/sub channel. `<ns>` follows the view's most sensitive feature, so a
consumer of a confidential view reads exactly that view in `fss`, not the namespace.

Passwords come from the environment (`FS_ACL_PASSWORD_<USER>`, e.g. `FS_ACL_PASSWORD_TEAM_RANKING`), are
sent as SHA-256 hashes (`#<hash>`), and are never printed: rules shown to people carry `#<password>`.
`apply` sets every user (`ACL SETUSER <user> reset ...`), reports which were created, changed or left as
they were, removes generated users (`fs-*`) no consumer declares any more, and records it in the audit log.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from feature_pipelines.catalog import Catalog
from feature_pipelines.online.layout import ViewKeys, deny_key, namespace_for
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.person_erasure import PERSON_KEY
from feature_pipelines.settings import Settings
from feature_pipelines.spec import FeatureView

USER_PREFIX = "fs-"
READ_COMMANDS = ("get", "mget", "hget", "hmget", "exists")
ALIAS_COMMAND = "fcall_ro"
CONSUMER = re.compile(r"^[a-z][a-z0-9]*:[a-z0-9][a-z0-9_.-]*$")


class AclError(ValueError):
    pass


def user_name(consumer: str) -> str:
    """`team:ranking` -> `fs-team-ranking`: a Redis user name that also fits in a URL (no `:`)."""
    return USER_PREFIX + re.sub(r"[^a-z0-9]+", "-", consumer.lower()).strip("-")


def password_variable(consumer: str) -> str:
    """The environment variable holding a consumer's password: `FS_ACL_PASSWORD_TEAM_RANKING`."""
    return "FS_ACL_PASSWORD_" + re.sub(r"[^A-Z0-9]+", "_", consumer.upper()).strip("_")


@dataclass(frozen=True)
class AclUser:
    consumer: str
    services: tuple[str, ...]
    views: tuple[str, ...]
    """Deployed names of the views its services consume."""
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    """Key patterns, each read-only."""

    @property
    def name(self) -> str:
        return user_name(self.consumer)

    def rules(self, password_hash: str | None = None) -> list[str]:
        """The `ACL SETUSER` rules, from a clean slate; `#<password>` stands in for the hash when not given."""
        return [
            "reset",
            "on",
            f"#{password_hash}" if password_hash else "#<password>",
            "resetchannels",
            "-@all",
            *[f"+{c}" for c in self.commands],
            *[f"%R~{k}" for k in self.keys],
        ]


def _view_keys(view: FeatureView, catalog: Catalog) -> list[str]:
    keys = ViewKeys(namespace_for(view.namespace_sensitivity), view.deployed_name)
    patterns = [keys.current, keys.versions, f"{keys.namespace}:{keys.view}:*"]
    if catalog.entity_of(view).personal:
        patterns.append(deny_key(view.entity_name))
    return patterns


def users(catalog: Catalog, select_db: bool = False) -> list[AclUser]:
    """One user per declared consumer, from every service it consumes. `select_db`: the serving URL names a
    database other than 0 (redis-py then sends SELECT, which the user must be allowed)."""
    by_consumer: dict[str, list[str]] = {}
    for service in catalog.services.values():
        for consumer in service.consumers:
            by_consumer.setdefault(consumer, []).append(service.name)
    out = []
    for consumer, services in sorted(by_consumer.items()):
        views: dict[str, FeatureView] = {}
        for service in services:
            for ref in catalog.resolve_service(service):
                views[ref.view.deployed_name] = ref.view
        keys: list[str] = []
        for view in sorted(views.values(), key=lambda v: v.deployed_name):
            keys += [k for k in _view_keys(view, catalog) if k not in keys]
        commands = list(READ_COMMANDS)
        if any(catalog.entity_of(v).join_key == PERSON_KEY for v in views.values()):
            commands.append(ALIAS_COMMAND)
        if select_db:
            commands.append("select")
        out.append(AclUser(consumer, tuple(sorted(services)), tuple(sorted(views)), tuple(commands), tuple(keys)))
    return out


def password_hash(consumer: str) -> str:
    """SHA-256 of the consumer's password from the environment; an error names the variable, never a value."""
    secret = os.environ.get(password_variable(consumer))
    if not secret:
        raise AclError(
            f"no password for consumer {consumer!r} ({user_name(consumer)}): set {password_variable(consumer)}"
        )
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Applied:
    user: str
    change: str
    """`created`, `changed`, `unchanged` or `removed`."""
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def _described(r: redis.Redis, user: str) -> list[str] | None:
    """The user's rules as `ACL LIST` shows them, with password hashes redacted; None if it does not exist."""
    for line in r.execute_command("ACL", "LIST"):
        text = line.decode() if isinstance(line, bytes) else line
        parts = text.split()
        if parts[:2] == ["user", user]:
            return ["#<password>" if p.startswith("#") else p for p in parts[2:]]
    return None


def _password_changed(r: redis.Redis, user: str, digest: str) -> bool:
    info = r.execute_command("ACL", "GETUSER", user)
    fields = dict(zip(info[::2], info[1::2], strict=True)) if isinstance(info, list) else info
    stored = fields.get(b"passwords", fields.get("passwords", []))
    return [p.decode() if isinstance(p, bytes) else p for p in stored] != [digest]


def apply(r: redis.Redis, catalog: Catalog, settings: Settings, *, by: str, reason: str = "") -> list[Applied]:
    """Set every generated user on the Redis behind `r` (an admin connection); remove stale generated ones."""
    wanted = users(catalog, select_db=_names_db(settings.redis_url))
    hashes = {u.consumer: password_hash(u.consumer) for u in wanted}  # all or nothing: check before changing
    done: list[Applied] = []
    for user in wanted:
        before = _described(r, user.name)
        secret_changed = before is not None and _password_changed(r, user.name, hashes[user.consumer])
        r.execute_command("ACL", "SETUSER", user.name, *user.rules(hashes[user.consumer]))
        after = _described(r, user.name) or []
        if before is None:
            done.append(Applied(user.name, "created", tuple(after)))
        elif before != after or secret_changed:
            added = tuple(p for p in after if p not in before) + (("password",) if secret_changed else ())
            done.append(Applied(user.name, "changed", added, tuple(p for p in before if p not in after)))
        else:
            done.append(Applied(user.name, "unchanged"))
    names = {u.name for u in wanted}
    for raw in r.execute_command("ACL", "USERS"):
        name = raw.decode() if isinstance(raw, bytes) else raw
        if name.startswith(USER_PREFIX) and name not in names:
            r.execute_command("ACL", "DELUSER", name)
            done.append(Applied(name, "removed"))
    changes = [a for a in done if a.change != "unchanged"]
    AuditLog(settings.privacy_table("audit")).append(
        "acl_apply",
        by=by,
        reason=reason,
        target=_server(settings.redis_url),
        details={a.user: {"change": a.change, "added": a.added, "removed": a.removed} for a in changes},
    )
    return done


def _names_db(url: str) -> bool:
    path = urlsplit(url).path.strip("/")
    return bool(path) and path != "0"


def _server(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
