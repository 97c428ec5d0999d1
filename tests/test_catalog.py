"""Loading feature_defs validates the whole catalog and names the file and object of every problem."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

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
    assert set(catalog.views) == {"user_purchase_behavior", "user_context", "item_popularity"}
    assert "ranking_model_v1" in catalog.services
    refs = catalog.resolve_service("ranking_model_v1")
    assert {r.view.name for r in refs} == {"user_purchase_behavior", "user_context", "item_popularity"}


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
