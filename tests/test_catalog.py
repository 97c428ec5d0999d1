"""Loading feature_defs validates the whole catalog and names the file and object of every problem."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.catalog import CatalogError, load_catalog

HEADER = """
from datetime import date, timedelta
import polars as pl
from feature_pipelines.spec import BatchSource, Entity, Feature, FeatureService, FeatureView

user = Entity(name="user", join_key="user_id", dtype=pl.Int64)
clicks = BatchSource(name="clicks", location="clicks.parquet", format="parquet",
                     schema={"user_id": pl.Int64, "ts": pl.Datetime("us"), "n": pl.Int64},
                     event_time="ts", start=date(2024, 1, 1), end=date(2024, 1, 31))

def per_user(events, ctx):
    return events.group_by("user_id").agg(pl.col("n").sum().alias("clicks"))
"""

GOOD_VIEW = """
view = FeatureView(name="user_clicks", entity=user, source=clicks, owner="team:ml", description="Clicks",
                   features=(Feature(name="clicks", dtype=pl.Int64, description="Clicks in the window"),),
                   transformation=per_user, windows=(timedelta(days=7),))
"""


def write_package(tmp_path: Path, **modules: str) -> tuple[str, Path]:
    name = f"defs_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(textwrap.dedent(body))
    return name, pkg


def problems_of(tmp_path: Path, **modules: str) -> list[str]:
    name, pkg = write_package(tmp_path, **modules)
    with pytest.raises(CatalogError) as err:
        load_catalog(name, pkg)
    return err.value.problems


def test_the_shipped_catalog_is_valid(catalog):
    assert set(catalog.views) == {
        "user_purchase_behavior",
        "user_context",
        "item_popularity",
        "person_profile",
        "person_location",
    }
    # The sensitive inferred location is apart from the public profile, in its own sensitivity.
    assert catalog.views["person_profile"].sensitivity == "public"
    assert catalog.views["person_location"].sensitivity == "confidential"
    assert "ranking_model_v1" in catalog.services
    refs = catalog.resolve_service("ranking_model_v1")
    assert {r.view.name for r in refs} == {"user_purchase_behavior", "user_context", "item_popularity"}


def test_identity_keyed_views_and_lookups_are_checked_against_their_sources(tmp_path):
    body = (
        HEADER.replace("FeatureView", "FeatureView, Lookup, ThroughIdentity")
        + """
def categories(raw):
    return raw.select("user_id", pl.lit("x").alias("kind"))

view = FeatureView(name="by_person", entity=user, source=clicks, owner="team:ml", description="Clicks",
                   features=(Feature(name="clicks", dtype=pl.Int64, description="Clicks in the window"),),
                   transformation=per_user, windows=(timedelta(days=7),),
                   identity=ThroughIdentity(ids=("user_id", "cookie"), own="cookie"),
                   lookups=(Lookup(name="kinds", source="nowhere", key="user_id", columns={"k": pl.String},
                                   derive=categories),
                            Lookup(name="kinds2", source=clicks, key="sku", columns={"n": pl.String},
                                   derive=categories)))
"""
    )
    problems = "\n".join(problems_of(tmp_path, views=body))
    assert "is keyed by 'person_id'" in problems and "join key 'user_id'" in problems
    assert "columns ['cookie'] are not in source 'clicks'" in problems
    assert "lookup 'kinds': unknown source 'nowhere'" in problems
    assert "lookup 'kinds2': key 'sku' is not a column of source 'clicks'" in problems
    assert "lookup 'kinds2': columns ['n'] already exist" in problems
    assert "derive does not produce 'n'" in problems and "derive does not produce 'valid_from'" in problems


def test_a_valid_package_loads(tmp_path):
    body = HEADER + GOOD_VIEW
    name, pkg = write_package(tmp_path, views=body)
    catalog = load_catalog(name, pkg)
    line = next(i for i, text in enumerate(body.splitlines(), 1) if text.startswith("view = FeatureView("))
    assert catalog.views["user_clicks"].defined_at == f"{pkg / 'views.py'}:{line}"


def test_duplicate_names_name_both_files(tmp_path):
    other = HEADER.replace('name="clicks"', 'name="clicks2"') + GOOD_VIEW.replace("view =", "view2 =")
    problems = problems_of(tmp_path, a=HEADER + GOOD_VIEW, b=other)
    dup = [p for p in problems if "duplicate name 'user_clicks'" in p]
    assert dup and "b.py" in dup[0] and "a.py" in dup[0]


def test_unknown_entity_and_source(tmp_path):
    body = HEADER + GOOD_VIEW.replace("entity=user", 'entity="shopper"').replace("source=clicks", 'source="views"')
    problems = problems_of(tmp_path, views=body)
    assert any("unknown entity 'shopper'" in p and "views.py" in p and "'user_clicks'" in p for p in problems)
    assert any("unknown source 'views'" in p for p in problems)


def test_feature_not_produced_by_the_transformation(tmp_path):
    body = HEADER + GOOD_VIEW.replace(
        "),),", '), Feature(name="purchases", dtype=pl.Int64, description="Purchases"),),'
    )
    problems = problems_of(tmp_path, views=body)
    assert any("declared feature 'purchases' is not produced" in p and "views.py:" in p for p in problems)


def test_feature_produced_with_another_dtype(tmp_path):
    body = HEADER + GOOD_VIEW.replace(
        'dtype=pl.Int64, description="Clicks in', 'dtype=pl.Float64, description="Clicks in'
    )
    problems = problems_of(tmp_path, views=body)
    assert any("'clicks' is declared Float64 but the transformation produces Int64" in p for p in problems)


def test_missing_owner_and_description(tmp_path):
    body = HEADER + GOOD_VIEW.replace('owner="team:ml"', 'owner=""').replace(
        'description="Clicks in the window"', 'description=""'
    )
    problems = problems_of(tmp_path, views=body)
    assert any("missing owner" in p and "'user_clicks'" in p for p in problems)
    assert any("feature user_clicks:clicks has no description" in p and "views.py:" in p for p in problems)


@pytest.mark.parametrize(
    ("ttl", "message"),
    [
        ("timedelta(seconds=0)", "online_ttl must be at least one second"),
        ("timedelta(days=-1)", "online_ttl must be at least one second"),
        ("3600", "online_ttl must be a timedelta"),
        ("timedelta(days=5000)", "over ten years"),
    ],
)
def test_invalid_ttl(tmp_path, ttl, message):
    body = HEADER + GOOD_VIEW.replace("windows=(", f"online_ttl={ttl}, windows=(")
    problems = problems_of(tmp_path, views=body)
    assert any(message in p and "'user_clicks'" in p for p in problems), problems


def test_service_referencing_unknown_feature(tmp_path):
    body = (
        HEADER
        + GOOD_VIEW
        + """
svc = FeatureService(name="ranker", features=("user_clicks:nope",), owner="team:ml", description="A model")
"""
    )
    problems = problems_of(tmp_path, views=body)
    assert any("FeatureService 'ranker'" in p and "no feature 'nope'" in p for p in problems)


def test_every_problem_is_reported_at_once(tmp_path):
    body = HEADER + GOOD_VIEW.replace('owner="team:ml"', 'owner=""').replace("entity=user", 'entity="shopper"')
    assert len(problems_of(tmp_path, views=body)) >= 2


def test_declared_inputs_must_be_source_columns(tmp_path):
    body = HEADER + GOOD_VIEW.replace(
        'description="Clicks in the window"', 'description="Clicks", inputs=("n", "nope")'
    )
    problems = problems_of(tmp_path, views=body)
    assert any("user_clicks:clicks: inputs ['nope'] are not raw columns" in p for p in problems)


# -- definition hashes cover what a transformation uses -----------------------------------------------------
def _hashes(catalog) -> dict[str, tuple[str, str]]:
    return {name: (v.code_hash(), v.definition_hash()) for name, v in catalog.views.items()}


def _changed(before: dict, after: dict) -> set[str]:
    for name in before:  # the code hash and the definition hash move together
        assert (before[name][0] == after[name][0]) == (before[name][1] == after[name][1]), name
    return {name for name in before if before[name] != after[name]}


def test_changing_a_helper_body_changes_the_hash_of_exactly_the_views_that_use_it(catalog, monkeypatch):
    """Before: only the transformation's own source was hashed, so editing `is_purchase` changed nothing."""
    from feature_defs import retail_rules

    before = _hashes(catalog)

    def is_purchase():  # the same helper, now counting single units as no purchase
        return pl.col("invoice_no").str.contains(r"^\d") & (pl.col("quantity") > 1) & (pl.col("unit_price") > 0)

    monkeypatch.setattr(retail_rules.is_purchase, "__code__", is_purchase.__code__)
    assert _changed(before, _hashes(catalog)) == {"user_purchase_behavior", "item_popularity"}
    monkeypatch.undo()
    assert _hashes(catalog) == before


def test_changing_a_constant_changes_the_hash_of_exactly_the_views_that_read_it(catalog, monkeypatch):
    """Before: `COUNTRY_INFO` is read by `customer_context` only through a global: its edits were invisible.
    EIRE -> GBP leaves every declared `allowed` set as it was, so only the constant itself can tell."""
    from feature_defs import user_features

    before = _hashes(catalog)
    monkeypatch.setitem(user_features.COUNTRY_INFO, "EIRE", ("en_IE", "GBP"))
    assert _changed(before, _hashes(catalog)) == {"user_context"}


def test_documenting_a_view_its_code_reads_does_not_change_its_code_hash(catalog, monkeypatch):
    """`purchase_behavior` reads its own view's feature names: a new description or a deprecation is not a
    transformation change (the plan would otherwise ask for a backfill)."""
    import dataclasses

    from feature_defs import user_features

    view = user_features.user_purchase_behavior
    before = catalog.views["user_purchase_behavior"].code_hash()
    documented = dataclasses.replace(
        view,
        description="Reworded.",
        features=tuple(dataclasses.replace(f, deprecated="soon", description="Reworded.") for f in view.features),
    )
    monkeypatch.setattr(user_features, "user_purchase_behavior", documented)
    assert catalog.views["user_purchase_behavior"].code_hash() == before
    renamed = dataclasses.replace(
        view, features=(*view.features[:-1], dataclasses.replace(view.features[-1], name="x"))
    )
    monkeypatch.setattr(user_features, "user_purchase_behavior", renamed)
    assert catalog.views["user_purchase_behavior"].code_hash() != before  # what it selects did change


def test_the_hash_is_the_same_in_every_process(catalog):
    import json
    import subprocess
    import sys

    code = (
        "import json; from feature_pipelines.catalog import load_catalog; c = load_catalog(); "
        "print(json.dumps({n: [v.code_hash(), v.definition_hash()] for n, v in c.views.items()}))"
    )
    here = {name: list(pair) for name, pair in _hashes(catalog).items()}
    for seed in ("0", "12345"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here


CLOSURE_RULES = """
import polars as pl

LIMIT = 3  # a comment
THRESHOLDS = {"low": 1, "high": 9}


def above(col):
    return pl.col(col) > LIMIT
"""

CLOSURE_VIEWS = """
from {pkg} import rules
from {pkg}.rules import above


def make(threshold):
    def per_user(events, ctx, scale=1):
        keep = lambda e: e.filter(above("n"))  # noqa: E731
        return keep(events).group_by("user_id").agg((pl.col("n").sum() * scale).alias("clicks")).filter(
            pl.col("clicks") > threshold
        )

    return per_user


def via_module(events, ctx):
    limit = rules.THRESHOLDS["high"]
    return events.group_by("user_id").agg(pl.col("n").sum().alias("clicks")).filter(pl.col("clicks") > limit)


def kw(name):
    return dict(entity=user, source=clicks, owner="team:ml", description="Clicks", windows=(timedelta(days=7),),
                features=(Feature(name="clicks", dtype=pl.Int64, description="Clicks in the window"),), name=name)


five = FeatureView(transformation=make(5), **kw("five"))
seven = FeatureView(transformation=make(7), **kw("seven"))
module_attr = FeatureView(transformation=via_module, **kw("module_attr"))
plain = FeatureView(transformation=per_user, **kw("plain"))
"""


def _load_fresh(name: str, pkg: Path):
    """Import the package again from its (edited) files, as a new process would."""
    import importlib
    import shutil
    import sys

    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    shutil.rmtree(pkg / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    return load_catalog(name, pkg)


def test_hash_covers_closures_defaults_lambdas_helpers_and_module_constants(tmp_path):
    name, pkg = write_package(tmp_path, rules=CLOSURE_RULES, views=HEADER + "\n" + CLOSURE_VIEWS)
    (pkg / "views.py").write_text((pkg / "views.py").read_text().replace("{pkg}", name))
    base = _hashes(_load_fresh(name, pkg))
    assert base["five"] != base["seven"]  # one factory, two captured thresholds

    def variant(file: str, old: str, new: str) -> set[str]:
        path = pkg / file
        original = path.read_text()
        assert old in original
        path.write_text(original.replace(old, new))
        try:
            return _changed(base, _hashes(_load_fresh(name, pkg)))
        finally:
            path.write_text(original)

    assert variant("rules.py", "LIMIT = 3", "LIMIT = 4") == {"five", "seven"}  # a constant of a helper
    assert variant("rules.py", "> LIMIT", ">= LIMIT") == {"five", "seven"}  # a helper's body
    assert variant("rules.py", '"high": 9', '"high": 10') == {"module_attr"}  # a constant read as rules.X
    assert variant("views.py", "scale=1", "scale=2") == {"five", "seven"}  # a default argument
    assert variant("views.py", 'e.filter(above("n"))', 'e.filter(~above("n"))') == {"five", "seven"}  # a lambda
    assert variant("rules.py", "# a comment", "# another comment") == set()  # not what it computes
    assert variant("rules.py", "import polars as pl\n", "import polars as pl\n\nUNUSED = 1\n") == set()


# -- versions, deprecation and the service lock ----------------------------------------------------------------
VERSIONED = """
def as_float(events, ctx):
    return per_user(events, ctx).with_columns(pl.col("clicks").cast(pl.Float64))

def kw(**extra):
    return dict(name="user_clicks", entity=user, source=clicks, owner="team:ml", description="Clicks",
                windows=(timedelta(days=7),), **extra)

v1 = FeatureView(features=(Feature(name="clicks", dtype=pl.Int64, description="Clicks", deprecated="2024-05: use v2"),),
                 transformation=per_user, **kw())
v2 = FeatureView(version=2, features=(Feature(name="clicks", dtype=pl.Float64, description="Clicks"),),
                 transformation=as_float, **kw())
"""


def _service(name: str, *refs: str) -> str:
    return f"\n{name} = FeatureService(name={name!r}, features={refs!r}, owner='team:ml', description='A model')\n"


def _lock(pkg: Path, lock: dict) -> None:
    import json

    (pkg / "services.lock.json").write_text(json.dumps(lock))


def test_two_versions_of_a_view_side_by_side_and_how_services_pick_one(tmp_path):
    body = (
        HEADER
        + VERSIONED
        + _service("newest", "user_clicks:*")
        + _service("pinned", "user_clicks@1:clicks")
        + _service("locked", "user_clicks:clicks")
    )
    name, pkg = write_package(tmp_path, views=body)
    v1_lock = {"user_clicks": {"version": 1, "features": {"clicks": "Int64"}}}
    _lock(pkg, {"pinned": v1_lock, "locked": v1_lock})
    cat = load_catalog(name, pkg)
    assert set(cat.views) == {"user_clicks", "user_clicks@2"}
    assert cat.views["user_clicks@2"].asset_name == "user_clicks__v2"
    assert cat.contract("newest") == {"user_clicks@2": {"clicks": "Float64"}}  # unlocked: the newest version
    assert [r.view.version for r in cat.resolve_service("pinned")] == [1]  # `view@1`: explicit
    assert cat.contract("locked") == {"user_clicks": {"clicks": "Int64"}}  # the lock keeps the model's version
    assert sorted(w.split("FeatureService ")[1][:8] for w in cat.warnings) == ["'locked'", "'pinned'"]
    assert "still consumes deprecated feature user_clicks:clicks (2024-05: use v2)" in cat.warnings[0]

    # An explicit version that contradicts the lock is an error, not a silent switch.
    (pkg / "views.py").write_text(body.replace("'user_clicks:clicks'", "'user_clicks@2:clicks'"))
    with pytest.raises(CatalogError, match="names version 2 but the service's lock"):
        _load_fresh(name, pkg)


def test_a_deprecated_feature_is_refused_in_a_new_service_and_warned_in_a_locked_one(tmp_path):
    body = HEADER + VERSIONED
    problems = problems_of(tmp_path, views=body + _service("fresh", "user_clicks@1:clicks"))
    assert any(
        "FeatureService 'fresh': feature user_clicks:clicks is deprecated (2024-05: use v2)" in p
        and "a new consumer may not start" in p
        and "views.py:" in p
        for p in problems
    ), problems
    # `view:*` leaves a deprecated feature out of a new consumer, instead of failing.
    name, pkg = write_package(tmp_path, views=body + _service("wild", "user_clicks@1:*"))
    assert load_catalog(name, pkg).contract("wild") == {}
    # A service whose lock already consumes it keeps it, with a warning, not an error.
    name, pkg = write_package(tmp_path, views=body + _service("old", "user_clicks@1:clicks"))
    _lock(pkg, {"old": {"user_clicks": {"version": 1, "features": {"clicks": "Int64"}}}})
    cat = load_catalog(name, pkg)
    assert cat.contract("old") == {"user_clicks": {"clicks": "Int64"}}
    assert len(cat.warnings) == 1 and "FeatureService 'old': still consumes deprecated" in cat.warnings[0]


def test_a_locked_contract_refuses_an_in_place_dtype_change_and_a_retired_version(tmp_path):
    in_place = HEADER + GOOD_VIEW.replace("dtype=pl.Int64", "dtype=pl.Float64").replace(
        "transformation=per_user", "transformation=lambda e, c: per_user(e, c).with_columns(pl.col('clicks') * 1.0)"
    )
    name, pkg = write_package(tmp_path, views=in_place + _service("model", "user_clicks:*"))
    _lock(pkg, {"model": {"user_clicks": {"version": 1, "features": {"clicks": "Int64"}}}})
    with pytest.raises(CatalogError) as err:
        load_catalog(name, pkg)
    (problem,) = err.value.problems
    assert "FeatureService 'model': contract: its lock consumes user_clicks:clicks as Int64" in problem
    assert "declares Float64 for the same version" in problem and "FeatureView(version=2)" in problem

    bumped = HEADER + GOOD_VIEW.replace("windows=(", "version=2, windows=(")
    name, pkg = write_package(tmp_path, views=bumped + _service("model", "user_clicks:*"))
    _lock(pkg, {"model": {"user_clicks": {"version": 1, "features": {"clicks": "Int64"}}}})
    with pytest.raises(CatalogError) as err:
        load_catalog(name, pkg)
    assert "its lock (services.lock.json) consumes user_clicks, which is not in the catalog (versions [2])" in str(
        err.value
    )


def test_fstore_lock_records_the_contract_and_refuses_a_new_deprecated_use(tmp_path):
    import json

    from feature_pipelines.catalog import lock_services

    name, pkg = write_package(tmp_path, views=HEADER + VERSIONED + _service("model", "user_clicks:*"))
    cat = load_catalog(name, pkg)
    path = lock_services(cat)
    assert json.loads(path.read_text()) == {"model": {"user_clicks": {"version": 2, "features": {"clicks": "Float64"}}}}
    assert _load_fresh(name, pkg).contract("model") == {"user_clicks@2": {"clicks": "Float64"}}
    # Locked on the deprecated v1 feature: allowed, with a warning. Re-locking is a new use: refused while
    # the service names v1 explicitly, and moves an unversioned reference to the newest version.
    _lock(pkg, {"model": {"user_clicks": {"version": 1, "features": {"clicks": "Int64"}}}})
    (pkg / "views.py").write_text(HEADER + VERSIONED + _service("model", "user_clicks@1:clicks"))
    cat = _load_fresh(name, pkg)
    assert cat.warnings and cat.contract("model") == {"user_clicks": {"clicks": "Int64"}}
    with pytest.raises(CatalogError, match="user_clicks:clicks is deprecated"):
        lock_services(cat, ["model"])
    (pkg / "views.py").write_text(HEADER + VERSIONED + _service("model", "user_clicks:clicks"))
    cat = _load_fresh(name, pkg)
    assert cat.contract("model") == {"user_clicks": {"clicks": "Int64"}}
    lock_services(cat, ["model"])
    assert _load_fresh(name, pkg).contract("model") == {"user_clicks@2": {"clicks": "Float64"}}


def test_view_names_and_versions_are_validated(tmp_path):
    body = HEADER + GOOD_VIEW.replace('name="user_clicks"', 'name="user__clicks"').replace(
        "windows=(", "version=0, windows=("
    )
    problems = problems_of(tmp_path, views=body)
    assert any("FeatureView 'user__clicks@0': name must be a letter" in p for p in problems)
    assert any("version must be a whole number from 1, got 0" in p for p in problems)


def test_source_contracts_and_key_rules_are_validated(tmp_path):
    body = HEADER.replace(
        'event_time="ts",',
        'event_time="ts", max_shrink=1.5, closures=((date(2024, 1, 9), date(2024, 1, 2)), "Caturday"),\n'
        '                     contracts={"nope": ColumnContract(not_null=True), "n": ColumnContract(pattern="(",\n'
        '                                max_length=3, unless="n >"), "user_id": ColumnContract(min=5, max=1)},',
    ).replace(
        'user = Entity(name="user", join_key="user_id", dtype=pl.Int64)',
        'user = Entity(name="user", join_key="user_id", dtype=pl.String, pattern="[", min=1)',
    )
    body = body.replace("import BatchSource,", "import BatchSource, ColumnContract,")
    problems = "\n".join(problems_of(tmp_path, views=body + GOOD_VIEW))
    for expected in (
        "column 'nope': contract for a column the schema does not declare",
        "column 'n': pattern '(' does not compile",
        "column 'n': max_length needs a String column, not Int64",
        "column 'n': unless 'n >' is not a valid condition",
        "column 'user_id': min 5 is above max 1",
        "max_shrink must be within 0..1, got 1.5",
        "closure (datetime.date(2024, 1, 9), datetime.date(2024, 1, 2)) must be a date, a (first, last) pair",
        "closure 'Caturday' is not a weekday name (Monday, Tuesday,",
        "column 'user_id' holds 'user' keys, declared Int64 here but String on the entity",
        "Entity 'user': pattern '[' does not compile",
        "Entity 'user': min/max need numeric keys, not String",
    ):
        assert expected in problems, expected
    assert "views.py:" in problems
