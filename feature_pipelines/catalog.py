"""Load every spec object from the `feature_defs` package and validate the catalog as a whole.

Validation collects every problem before failing, and each message names the file, the line and the object,
so a data engineer fixes a broken catalog in one pass. Findings that do not block (a service still consuming
a deprecated feature) are collected in `Catalog.warnings`.

Views are keyed by their deployed name (`user_context`, `user_context@2`): several versions of one view can
be declared side by side while models still consume the older one. Feature services resolve against the
lock file (`services.lock.json` beside the catalog, written by `fstore lock`): it records, per service, the
view versions and feature dtypes the model was built on (its contract).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import ModuleType

import polars as pl

from feature_pipelines.spec import (
    PERSON_ID,
    SENSITIVITIES,
    VALID_FROM,
    VIEW_NAME,
    WEEKDAYS,
    BatchSource,
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    Purpose,
    TrainingSetSpec,
    WindowContext,
    output_schema,
    resolve_dtype,
    transformation_input_schema,
    versioned_name,
)

SPEC_TYPES = (Entity, BatchSource, FeatureView, FeatureService, TrainingSetSpec, Purpose)
LOCK_FILE = "services.lock.json"
"""Beside the catalog's modules: per feature service, the view versions and dtypes its model consumes."""


class CatalogError(ValueError):
    """The catalog in `feature_defs/` is invalid; `problems` lists every finding."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid feature catalog:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class FeatureRef:
    view: FeatureView
    feature: str


@dataclass(frozen=True)
class LockedView:
    """What a service's lock records of one view: the version it consumes and each feature's dtype."""

    version: int
    features: dict[str, str]


@dataclass
class Catalog:
    """All spec objects by name, after validation. `base_dir` anchors relative source locations.

    `views` is keyed by deployed name (`versioned_name`): `user_context` is version 1, `user_context@2`
    version 2. `locks` is the lock file: service -> view name -> `LockedView`."""

    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, BatchSource] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)
    training_sets: dict[str, TrainingSetSpec] = field(default_factory=dict)
    purposes: dict[str, Purpose] = field(default_factory=dict)
    base_dir: Path = Path(".")
    locks: dict[str, dict[str, LockedView]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # only when loaded with strict=False

    def versions_of(self, name: str) -> dict[int, FeatureView]:
        """Every declared version of the view called `name`, by version number."""
        return {v.version: v for v in self.views.values() if v.name == name}

    def entity_of(self, view: FeatureView) -> Entity:
        return self.entities[view.entity_name]

    def source_of(self, view: FeatureView) -> BatchSource:
        return self.sources[view.source_name]

    def views_of(self, source: BatchSource) -> list[FeatureView]:
        return [v for v in self.views.values() if v.source_name == source.name]

    @cached_property
    def online_views(self) -> list[FeatureView]:
        return [v for v in self.views.values() if v.online]

    def resolve_service(self, name: str) -> list[FeatureRef]:
        """Expand a service's `view:feature` / `view:*` references, in declaration order, each to the view
        version the service consumes (explicit `view@N`, else its lock, else the newest)."""
        if name not in self.services:
            raise KeyError(f"unknown feature service {name!r}; known: {sorted(self.services)}")
        refs, problems, _ = resolve(self.services[name], self, self.locks.get(name, {}))
        if problems:
            raise CatalogError(problems)
        return refs

    def contract(self, name: str) -> dict[str, dict[str, str]]:
        """What service `name` consumes: deployed view name -> feature -> dtype (as `str(polars dtype)`)."""
        out: dict[str, dict[str, str]] = {}
        for ref in self.resolve_service(name):
            out.setdefault(ref.view.deployed_name, {})[ref.feature] = str(ref.view.feature(ref.feature).polars_dtype)
        return out


def parse_ref(ref: str) -> tuple[str, int | None, str] | None:
    """`"view:feature"`, `"view:*"` or `"view@2:feature"` -> (view, version or None, feature); None if malformed."""
    target, sep, feat = ref.partition(":")
    name, at, version = target.partition("@")
    if not sep or not name or not feat or (at and not version.isdigit()):
        return None
    return name, int(version) if at else None, feat


def resolve(
    service: FeatureService, catalog: Catalog, lock: dict[str, LockedView]
) -> tuple[list[FeatureRef], list[str], list[str]]:
    """A service's references resolved against `lock`: (refs, problems, warnings).

    Deprecated features: a service may keep consuming one its lock already has (a warning), never start to
    (an error for an explicit reference; `view:*` leaves it out). A locked feature must keep its dtype and
    exist in the locked version: changing either is breaking and needs a new view version."""
    where = f"{service.defined_at}: FeatureService {service.name!r}"
    refs: list[FeatureRef] = []
    problems: list[str] = []
    warnings: list[str] = []
    for ref in service.features:
        parsed = parse_ref(ref)
        if parsed is None:
            problems.append(f"{where}: reference {ref!r} must be 'view:feature', 'view:*' or 'view@N:feature'")
            continue
        name, version, feat = parsed
        versions = catalog.versions_of(name)
        if not versions:
            problems.append(f"{where}: unknown feature view {name!r} in {ref!r}")
            continue
        locked = lock.get(name)
        if version is not None and locked is not None and locked.version != version:
            problems.append(
                f"{where}: {ref!r} names version {version} but the service's lock ({LOCK_FILE}) consumes "
                f"{name} version {locked.version}; run `fstore lock {service.name}` when the model moves"
            )
            continue
        version = version if version is not None else (locked.version if locked else max(versions))
        view = versions.get(version)
        if view is None:
            why = f"its lock ({LOCK_FILE}) consumes" if locked and locked.version == version else "it names"
            problems.append(
                f"{where}: {why} {versioned_name(name, version)}, which is not in the catalog (versions "
                f"{sorted(versions)}): keep that version's definition while the model consumes it, or move the "
                f"model and run `fstore lock {service.name}`"
            )
            continue
        in_lock = set(locked.features) if locked is not None and locked.version == version else set()
        if feat == "*":
            names = [f.name for f in view.features if not f.deprecated or f.name in in_lock]
        elif feat not in view.feature_names:
            problems.append(f"{where}: view {view.deployed_name!r} has no feature {feat!r}")
            continue
        else:
            names = [feat]
        for n in names:
            deprecated = view.feature(n).deprecated
            if deprecated and n in in_lock:
                warnings.append(
                    f"{where}: still consumes deprecated feature {view.deployed_name}:{n} ({deprecated}); "
                    "move the model off it, then `fstore lock`"
                )
            elif deprecated:
                problems.append(
                    f"{where}: feature {view.deployed_name}:{n} is deprecated ({deprecated}); only a service whose "
                    f"lock ({LOCK_FILE}) already consumes it may keep it, a new consumer may not start"
                )
                continue
            refs.append(FeatureRef(view, n))
    problems += _lock_problems(where, service, catalog, lock, refs)
    versions_used: dict[str, set[int]] = {}
    for r in refs:
        versions_used.setdefault(r.view.name, set()).add(r.view.version)
    for name, used in sorted(versions_used.items()):
        if len(used) > 1:
            problems.append(f"{where}: consumes versions {sorted(used)} of view {name!r}; a model consumes one")
    if not problems:
        names = [r.feature for r in refs]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{where}: feature name {dup!r} comes from two views; rename one")
    return refs, problems, warnings


def _lock_problems(
    where: str, service: FeatureService, catalog: Catalog, lock: dict[str, LockedView], refs: list[FeatureRef]
) -> list[str]:
    """A locked feature the service still reads must keep its dtype, and may not vanish from its version."""
    problems = []
    referenced = {p[0] for p in map(parse_ref, service.features) if p}
    for name, locked in lock.items():
        view = catalog.versions_of(name).get(locked.version)
        if view is None or name not in referenced:
            continue  # not in the catalog: reported by `resolve` if still referenced; unreferenced: stale entry
        consumed = {r.feature for r in refs if r.view is view}
        nxt = locked.version + 1
        for feat, dtype in locked.features.items():
            if feat not in view.feature_names:
                problems.append(
                    f"{where}: contract: its lock consumes {view.deployed_name}:{feat} ({dtype}), which the view "
                    f"no longer declares; removing a feature is breaking: declare it as version {nxt} "
                    f"(FeatureView(version={nxt})) beside version {locked.version}"
                )
            elif feat in consumed and str(view.feature(feat).polars_dtype) != dtype:
                problems.append(
                    f"{where}: contract: its lock consumes {view.deployed_name}:{feat} as {dtype}, the catalog now "
                    f"declares {view.feature(feat).polars_dtype} for the same version; nothing is cast silently: "
                    f"declare the change as version {nxt} (FeatureView(version={nxt})) beside version "
                    f"{locked.version}, and `fstore lock {service.name}` once the model is retrained on it"
                )
    return problems


def read_lock(path: Path) -> tuple[dict[str, dict[str, LockedView]], list[str]]:
    """The lock file (absent: no service is locked yet), and any problem reading it."""
    if not path.exists():
        return {}, []
    try:
        raw = json.loads(path.read_text())
        return {
            service: {view: LockedView(int(v["version"]), dict(v["features"])) for view, v in views.items()}
            for service, views in raw.items()
        }, []
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, [f"{path}: not a valid lock file ({type(exc).__name__}: {exc}); regenerate it with `fstore lock`"]


def lock_services(catalog: Catalog, services: list[str] | None = None) -> Path:
    """Record what `services` (default: all) consume now, as new consumers would, in the lock file.

    Other services' entries are kept. Raises `CatalogError` if a service cannot be locked (it names a
    deprecated feature, say)."""
    names = list(catalog.services) if services is None else services
    unknown = [n for n in names if n not in catalog.services]
    if unknown:
        raise KeyError(f"unknown feature service(s) {unknown}; known: {sorted(catalog.services)}")
    locks = {s: v for s, v in catalog.locks.items() if s in catalog.services and s not in names}
    problems: list[str] = []
    for name in names:
        refs, found, _ = resolve(catalog.services[name], catalog, {})
        problems += found
        entry: dict[str, LockedView] = {}
        for ref in refs:
            locked = entry.setdefault(ref.view.name, LockedView(ref.view.version, {}))
            locked.features[ref.feature] = str(ref.view.feature(ref.feature).polars_dtype)
        locks[name] = entry
    if problems:
        raise CatalogError(problems)
    path = catalog.base_dir / LOCK_FILE
    payload = {
        service: {view: {"version": lv.version, "features": lv.features} for view, lv in sorted(views.items())}
        for service, views in sorted(locks.items())
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    catalog.locks = locks
    return path


def load_catalog(package: str = "feature_defs", path: Path | None = None, strict: bool = True) -> Catalog:
    """Import every module of `package` (found under `path`'s parent if given) and validate what it declares.

    `strict=False` returns an invalid catalog with its `problems` instead of raising (`fstore plan` shows
    what a change would break, contract violations included)."""
    if path is not None:
        sys.path.insert(0, str(Path(path).parent))
    try:
        root = importlib.import_module(package)
        modules = [root] + [
            importlib.import_module(f"{package}.{info.name}")
            for info in pkgutil.iter_modules(root.__path__)
            if not info.name.startswith("_")
        ]
    finally:
        if path is not None:
            sys.path.pop(0)
    catalog = Catalog(base_dir=Path(root.__path__[0]))
    problems: list[str] = []
    _collect(modules, catalog, problems)
    catalog.locks, lock_problems = read_lock(catalog.base_dir / LOCK_FILE)
    problems.extend(lock_problems)
    problems.extend(validate(catalog))
    if problems and strict:
        raise CatalogError(problems)
    catalog.problems = problems
    return catalog


def _collect(modules: list[ModuleType], catalog: Catalog, problems: list[str]) -> None:
    buckets = {
        Entity: catalog.entities,
        BatchSource: catalog.sources,
        FeatureView: catalog.views,
        FeatureService: catalog.services,
        TrainingSetSpec: catalog.training_sets,
        Purpose: catalog.purposes,
    }
    seen: dict[str, object] = {}
    for module in modules:
        for obj in vars(module).values():
            if not isinstance(obj, SPEC_TYPES):
                continue
            name = obj.deployed_name if isinstance(obj, FeatureView) else obj.name
            seen_as = f"purpose:{name}" if isinstance(obj, Purpose) else name  # purposes have their own names
            other = seen.get(seen_as)
            if other is obj:
                continue  # the same object re-exported by another module
            if other is not None:
                problems.append(
                    f"{obj.defined_at}: duplicate name {name!r}: {type(obj).__name__} here and "
                    f"{type(other).__name__} at {other.defined_at}"  # type: ignore[attr-defined]
                )
                continue
            seen[seen_as] = obj
            buckets[type(obj)][name] = obj  # type: ignore[index]


def validate(catalog: Catalog) -> list[str]:
    """Every problem of the catalog, each naming where it was declared; warnings go to `catalog.warnings`."""
    problems: list[str] = []
    for source in catalog.sources.values():
        where = f"{source.defined_at}: BatchSource {source.name!r}"
        if source.event_time not in source.schema:
            problems.append(f"{where}: event_time {source.event_time!r} is not in its schema")
        if source.format not in ("parquet", "csv"):
            problems.append(f"{where}: unknown format {source.format!r} (parquet or csv)")
        problems.extend(_validate_source_contracts(where, source, catalog))
        problems.extend(_validate_source_retention(where, source, catalog))
    for entity in catalog.entities.values():
        problems.extend(_validate_entity_keys(f"{entity.defined_at}: Entity {entity.name!r}", entity))
    for view in catalog.views.values():
        problems.extend(_validate_view(view, catalog))
        problems.extend(_validate_view_purposes(view, catalog))
    warnings: list[str] = []
    for service in catalog.services.values():
        where = f"{service.defined_at}: FeatureService {service.name!r}"
        problems.extend(_validate_owner(where, service.owner))
        if not service.description.strip():
            problems.append(f"{where}: missing description")
        refs, found, warned = resolve(service, catalog, catalog.locks.get(service.name, {}))
        problems.extend(found)
        problems.extend(_validate_service_purpose(where, service, refs, catalog))
        problems.extend(_validate_consumers(where, service))
        warnings.extend(warned)
    catalog.warnings = warnings
    for ts in catalog.training_sets.values():
        where = f"{ts.defined_at}: TrainingSetSpec {ts.name!r}"
        problems.extend(_validate_owner(where, ts.owner))
        if ts.service not in catalog.services:
            problems.append(f"{where}: unknown feature service {ts.service!r}")
        if not Path(ts.resolve_labels(catalog.base_dir)).exists():
            problems.append(f"{where}: label table {ts.resolve_labels(catalog.base_dir)} does not exist")
    return problems


def _retention_problem(where: str, retention: object) -> str | None:
    """Retention deletes whole daily partitions: a positive whole number of days, within ten years."""
    if retention is None:
        return None
    if not isinstance(retention, timedelta):
        return f"{where}: retention must be a timedelta (e.g. timedelta(days=400)) or None, got {retention!r}"
    if retention < timedelta(days=1) or retention % timedelta(days=1):
        return f"{where}: retention must be a whole number of days, at least one, got {retention}"
    if retention > timedelta(days=3650):
        return f"{where}: retention of {retention.days} days is over ten years"
    return None


def _validate_source_retention(where: str, source: BatchSource, catalog: Catalog) -> list[str]:
    """Raw rows must outlive the longest window reading them, or the newest partition is computed from a
    window retention has already cut."""
    if (problem := _retention_problem(where, source.retention)) is not None:
        return [problem]
    if source.retention is None:
        return []
    return [
        f"{where}: retention {source.retention.days}d does not cover the {view.lookback.days}d lookback of view "
        f"{view.deployed_name!r} ({view.defined_at}): keep raw rows at least one day longer than it reads"
        for view in catalog.views_of(source)
        if source.retention <= view.lookback
    ]


def _validate_view_retention(where: str, view: FeatureView) -> list[str]:
    """A point-in-time join reads partitions up to `offline_lookback` old: retention may not cut them."""
    if (problem := _retention_problem(where, view.retention)) is not None:
        return [problem]
    lookback = view.offline_lookback
    if view.retention is not None and isinstance(lookback, timedelta) and view.retention < lookback:
        return [
            f"{where}: retention {view.retention.days}d is shorter than its offline_lookback "
            f"{_days(lookback)}: training joins would find partitions already deleted"
        ]
    return []


def _days(value: timedelta) -> str:
    return f"{value.days}d" if not value % timedelta(days=1) else str(value)


def _validate_view_purposes(view: FeatureView, catalog: Catalog) -> list[str]:
    """Purposes are declared `Purpose`s; a view of people's data says what it is for."""
    where = f"{view.defined_at}: FeatureView {view.deployed_name!r}"
    problems = []
    if isinstance(view.purposes, str):
        return [f"{where}: purposes must be a tuple of purpose names, got the string {view.purposes!r}"]
    for name in view.purposes:
        if name not in catalog.purposes:
            problems.append(f"{where}: unknown purpose {name!r}; declared purposes: {sorted(catalog.purposes)}")
    entity = catalog.entities.get(view.entity_name)
    if entity is not None and entity.personal and not view.purposes:
        problems.append(
            f"{where}: its entity {entity.name!r} is personal: declare the purposes its rows serve "
            f"(FeatureView(purposes=(...)), one of {sorted(catalog.purposes)}), consent is checked against them"
        )
    return problems


def _validate_consumers(where: str, service: FeatureService) -> list[str]:
    """Consumers become Redis ACL users (`fstore acl`): `kind:name`, lower case, e.g. `team:ranking`."""
    from feature_pipelines.privacy.acl import CONSUMER

    if isinstance(service.consumers, str):
        return [f"{where}: consumers must be a tuple of names, got the string {service.consumers!r}"]
    return [
        f"{where}: consumer {c!r} must be 'kind:name' in lower case (e.g. 'team:ranking', 'service:search-api')"
        for c in service.consumers
        if not isinstance(c, str) or not CONSUMER.match(c)
    ]


def _validate_service_purpose(
    where: str, service: FeatureService, refs: list[FeatureRef], catalog: Catalog
) -> list[str]:
    """A model serves one declared purpose, and may only consume views declared for it."""
    if service.purpose is None:
        personal = sorted({r.view.deployed_name for r in refs if catalog.entity_of(r.view).personal})
        if personal:
            return [f"{where}: consumes views of personal entities ({', '.join(personal)}): declare its purpose"]
        return []
    if service.purpose not in catalog.purposes:
        return [f"{where}: unknown purpose {service.purpose!r}; declared purposes: {sorted(catalog.purposes)}"]
    outside = sorted({r.view.deployed_name for r in refs if r.view.purposes and service.purpose not in r.view.purposes})
    return [
        f"{where}: purpose {service.purpose!r} is not among the purposes of view {v!r} "
        f"({', '.join(catalog.views[v].purposes)}); add it there or consume another view"
        for v in outside
    ]


def _validate_source_contracts(where: str, source: BatchSource, catalog: Catalog) -> list[str]:
    """Contracts name declared columns and make sense for their dtypes; key columns have their entity's dtype."""
    from feature_pipelines.rules import check_pattern

    problems = []
    dtypes = {name: resolve_dtype(t) for name, t in source.schema.items()}
    for name, contract in source.contracts.items():
        at = f"{contract.defined_at}: BatchSource {source.name!r} column {name!r}"
        if name not in dtypes:
            problems.append(f"{at}: contract for a column the schema does not declare (schema: {list(dtypes)})")
            continue
        dtype = dtypes[name]
        ordered = dtype.is_numeric() or dtype.is_temporal()
        if (contract.min is not None or contract.max is not None) and not ordered:
            problems.append(f"{at}: min/max need a numeric or temporal column, not {dtype}")
        if contract.min is not None and contract.max is not None and contract.min > contract.max:
            problems.append(f"{at}: min {contract.min} is above max {contract.max}")
        if contract.pattern is not None and (error := check_pattern(contract.pattern)):
            problems.append(f"{at}: pattern {contract.pattern!r} does not compile: {error}")
        if contract.max_length is not None and dtype != pl.String:
            problems.append(f"{at}: max_length needs a String column, not {dtype}")
        if contract.allowed is not None and not contract.allowed:
            problems.append(f"{at}: allowed is empty: no value could pass")
        if contract.unless is not None:
            try:
                pl.DataFrame(schema=dtypes).select(pl.sql_expr(contract.unless))
            except Exception as exc:  # noqa: BLE001 - any failure of the expression is reported
                problems.append(f"{at}: unless {contract.unless!r} is not a valid condition: {exc}")
    if source.on_bad_rows not in ("reject", "quarantine"):
        problems.append(f"{where}: on_bad_rows must be 'reject' or 'quarantine', got {source.on_bad_rows!r}")
    if not 0 <= source.max_bad_fraction <= 1:
        problems.append(f"{where}: max_bad_fraction must be within 0..1, got {source.max_bad_fraction}")
    if not 0 <= source.max_shrink <= 1:
        problems.append(f"{where}: max_shrink must be within 0..1, got {source.max_shrink}")
    for closure in source.closures:
        if isinstance(closure, str):
            if closure not in WEEKDAYS:
                problems.append(f"{where}: closure {closure!r} is not a weekday name ({', '.join(WEEKDAYS)})")
            continue
        first, last = closure if isinstance(closure, tuple) else (closure, closure)
        if not (isinstance(first, date) and isinstance(last, date)) or first > last:
            problems.append(f"{where}: closure {closure!r} must be a date, a (first, last) pair or a weekday name")
    keys = {e.join_key: e for e in catalog.entities.values()}
    for name, dtype in dtypes.items():
        entity = keys.get(source.column(name))
        if entity is not None and dtype != entity.polars_dtype:
            problems.append(
                f"{where}: column {name!r} holds {entity.name!r} keys, declared {dtype} here but "
                f"{entity.polars_dtype} on the entity ({entity.defined_at})"
            )
    return problems


def _validate_entity_keys(where: str, entity: Entity) -> list[str]:
    from feature_pipelines.rules import check_pattern

    problems = []
    dtype = entity.polars_dtype
    for step in entity.normalize:
        if step not in ("strip", "upper", "lower", "nfkc"):
            problems.append(f"{where}: unknown normalization {step!r} (strip, upper, lower, nfkc)")
    text_rules = {"normalize": entity.normalize, "pattern": entity.pattern, "non_key_pattern": entity.non_key_pattern}
    for rule, value in text_rules.items():
        if value and dtype != pl.String:
            problems.append(f"{where}: {rule} needs String keys, not {dtype}")
    for rule in ("pattern", "non_key_pattern"):
        pattern = getattr(entity, rule)
        if pattern and (error := check_pattern(pattern)):
            problems.append(f"{where}: {rule} {pattern!r} does not compile: {error}")
    if (entity.min is not None or entity.max is not None) and not dtype.is_numeric():
        problems.append(f"{where}: min/max need numeric keys, not {dtype}")
    return problems


def _validate_owner(where: str, owner: str) -> list[str]:
    if not owner.strip():
        return [f"{where}: missing owner (an email or 'team:<name>')"]
    if not (owner.startswith("team:") or "@" in owner):
        return [f"{where}: owner {owner!r} must be an email or 'team:<name>'"]
    return []


def _validate_view(view: FeatureView, catalog: Catalog) -> list[str]:
    where = f"{view.defined_at}: FeatureView {view.deployed_name!r}"
    problems = _validate_owner(where, view.owner)
    if not VIEW_NAME.match(view.name) or "__" in view.name:
        problems.append(f"{where}: name must be a letter, then letters, digits or single underscores")
    if not isinstance(view.version, int) or isinstance(view.version, bool) or view.version < 1:
        problems.append(f"{where}: version must be a whole number from 1, got {view.version!r}")
    if not view.description.strip():
        problems.append(f"{where}: missing description")
    if view.sensitivity not in SENSITIVITIES:
        problems.append(f"{where}: sensitivity {view.sensitivity!r} is not one of {SENSITIVITIES}")
    if not isinstance(view.entity, str) and catalog.entities.get(view.entity.name) is not view.entity:
        problems.append(f"{where}: entity {view.entity.name!r} is not declared in feature_defs")
    if view.entity_name not in catalog.entities:
        problems.append(f"{where}: unknown entity {view.entity_name!r}")
    if view.source_name not in catalog.sources:
        problems.append(f"{where}: unknown source {view.source_name!r}")
    for tag, value in view.tags.items():
        if not isinstance(value, str):
            problems.append(f"{where}: tag {tag!r} must be a string, got {value!r}")
    problems.extend(_validate_ttls(where, view))
    if not 0 <= view.max_bad_fraction <= 1:
        problems.append(f"{where}: max_bad_fraction must be within 0..1, got {view.max_bad_fraction}")
    if view.on_bad_entities not in ("keep_previous", "null"):
        problems.append(f"{where}: on_bad_entities must be 'keep_previous' or 'null', got {view.on_bad_entities!r}")
    problems.extend(_validate_view_retention(where, view))
    names = [f.name for f in view.features]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: feature {dup!r} is declared twice")
    source = catalog.sources.get(view.source_name)
    problems.extend(_validate_inputs(where, view, catalog))
    raw_columns = transformation_input_schema(view, source) if source is not None else {}
    for feat in view.features:
        unknown = [c for c in feat.inputs if raw_columns and c not in raw_columns]
        if unknown:
            problems.append(f"{feat.defined_at}: feature {view.name}:{feat.name}: inputs {unknown} are not raw columns")
        if not feat.description.strip():
            problems.append(f"{feat.defined_at}: feature {view.name}:{feat.name} has no description")
        if feat.sensitivity is not None and feat.sensitivity not in SENSITIVITIES:
            problems.append(f"{feat.defined_at}: feature {view.name}:{feat.name}: bad sensitivity")
        if feat.outlier_z is not None and not feat.outlier_z > 0:
            problems.append(f"{feat.defined_at}: feature {view.name}:{feat.name}: outlier_z must be positive")
        problems.extend(_validate_length(view, feat))
    if problems or view.entity_name not in catalog.entities or view.source_name not in catalog.sources:
        return problems
    return problems + _validate_output_schema(where, view, catalog)


def _validate_length(view: FeatureView, feat: Feature) -> list[str]:
    """`length` belongs to list features, is a positive int, and agrees with an Array dtype's width."""
    if feat.length is None:
        return []
    where = f"{feat.defined_at}: feature {view.name}:{feat.name}"
    dtype = feat.polars_dtype
    if isinstance(feat.length, bool) or not isinstance(feat.length, int) or feat.length < 1:
        return [f"{where}: length must be a positive int, got {feat.length!r}"]
    if not isinstance(dtype, pl.List | pl.Array):
        return [f"{where}: length is for list or array features, the dtype is {dtype}"]
    if isinstance(dtype, pl.Array) and dtype.size != feat.length:
        return [f"{where}: length {feat.length} contradicts the dtype's width ({dtype})"]
    return []


def _validate_inputs(where: str, view: FeatureView, catalog: Catalog) -> list[str]:
    """An identity-keyed view is keyed by person ids and names id columns its source has; a lookup names a
    declared source, a key column of the view's source, and derives what it declares."""
    problems: list[str] = []
    source = catalog.sources.get(view.source_name)
    raw = source.raw_schema if source is not None else {}
    if view.identity is not None:
        ident = view.identity
        at = f"{ident.defined_at}: FeatureView {view.deployed_name!r} identity"
        entity = catalog.entities.get(view.entity_name)
        if entity is not None and entity.join_key != PERSON_ID:
            problems.append(
                f"{at}: an identity-keyed view is keyed by {PERSON_ID!r} (the alias map's person ids), but entity "
                f"{entity.name!r} has join key {entity.join_key!r}"
            )
        if not ident.ids:
            problems.append(f"{at}: ids is empty: name the event columns holding ids")
        missing = [c for c in dict.fromkeys((*ident.ids, ident.own)) if raw and c not in raw]
        if missing:
            problems.append(f"{at}: columns {missing} are not in source {view.source_name!r} (has {sorted(raw)})")
        if ident.own not in ident.ids:
            problems.append(f"{at}: own {ident.own!r} must be one of ids {list(ident.ids)}")
        if PERSON_ID in raw:
            problems.append(f"{at}: source {view.source_name!r} already has a {PERSON_ID!r} column")
    names = [lookup.name for lookup in view.lookups]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: lookup {dup!r} is declared twice")
    added: set[str] = {PERSON_ID} if view.identity is not None else set()
    for lookup in view.lookups:
        at = f"{lookup.defined_at}: FeatureView {view.deployed_name!r} lookup {lookup.name!r}"
        lookup_source = catalog.sources.get(lookup.source_name)
        if lookup_source is None:
            problems.append(f"{at}: unknown source {lookup.source_name!r}")
            continue
        if raw and lookup.key not in raw:
            problems.append(f"{at}: key {lookup.key!r} is not a column of source {view.source_name!r}")
        clash = sorted((set(raw) | added) & set(lookup.columns))
        if clash:
            problems.append(f"{at}: columns {clash} already exist in the events it is joined to")
        added |= set(lookup.columns)
        unknown = sorted(set(lookup.defaults) - set(lookup.columns))
        if unknown:
            problems.append(f"{at}: defaults for undeclared columns {unknown}")
        try:
            produced = lookup.derive(pl.LazyFrame(schema=lookup_source.raw_schema)).collect_schema()
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported, not raised
            problems.append(f"{at}: derive failed on an empty frame: {type(exc).__name__}: {exc}")
            continue
        expected = {lookup.key: raw.get(lookup.key), **lookup.polars_columns, VALID_FROM: pl.Datetime("us", "UTC")}
        for name, dtype in expected.items():
            if name not in produced:
                problems.append(f"{at}: derive does not produce {name!r}")
            elif dtype is not None and produced[name] != dtype:
                problems.append(f"{at}: derive produces {name!r} as {produced[name]}, expected {dtype}")
    return problems


def _validate_ttls(where: str, view: FeatureView) -> list[str]:
    problems = []
    checks = {"offline_lookback": view.offline_lookback}
    if view.online:
        checks["online_ttl"] = view.online_ttl
    for name, ttl in checks.items():
        if not isinstance(ttl, timedelta):
            problems.append(f"{where}: {name} must be a timedelta, got {ttl!r}")
        elif ttl < timedelta(seconds=1):
            problems.append(f"{where}: {name} must be at least one second, got {ttl}")
        elif ttl > timedelta(days=3650):
            problems.append(f"{where}: {name} of {ttl.days} days is over ten years")
    for window in view.windows:
        if not isinstance(window, timedelta) or window <= timedelta(0):
            problems.append(f"{where}: window {window!r} must be a positive timedelta")
    return problems


def _validate_output_schema(where: str, view: FeatureView, catalog: Catalog) -> list[str]:
    """Run the transformation on an empty frame of the raw schema and compare what it produces."""
    source, entity = catalog.source_of(view), catalog.entity_of(view)
    empty = pl.LazyFrame(schema=transformation_input_schema(view, source))
    ctx = WindowContext(as_of=datetime(2000, 1, 2, tzinfo=UTC), windows=view.windows)
    try:
        produced = view.transformation(empty, ctx).collect_schema()
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported, not raised
        return [f"{where}: transformation failed on an empty frame: {type(exc).__name__}: {exc}"]
    problems = []
    expected = output_schema(view, entity)
    for name, dtype in expected.items():
        if name not in produced:
            what = "join key" if name == entity.join_key else "declared feature"
            problems.append(f"{where}: {what} {name!r} is not produced by the transformation")
        elif produced[name] != dtype:
            problems.append(
                f"{where}: feature {name!r} is declared {dtype} but the transformation produces {produced[name]}"
            )
    extra = [c for c in produced if c not in expected]
    if extra:
        problems.append(f"{where}: the transformation produces undeclared columns {extra}")
    return problems
