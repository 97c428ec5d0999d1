"""Features of persons (stitched ids): the public profile, and the sensitive inferred location apart from it.

Both views read the behaviour events keyed through the identity graph (`ThroughIdentity`): each event is
attributed to the person its customer id, else its anonymous id, resolves to in the alias map at the
partition's end, as known then. Product events get their category from the retail lines (`item_category`).
"""

from datetime import timedelta

import polars as pl

from feature_defs.entities import person
from feature_defs.person_rules import (
    CATEGORIES,
    COUNT_WINDOWS,
    OTHER,
    VECTOR_SIZE,
    item_categories,
    person_location,
    person_profile,
    window_name,
)
from feature_defs.sources import behaviour_events, online_retail
from feature_pipelines.spec import Expectation, Feature, FeatureView, Lookup, ThroughIdentity

item_category = Lookup(
    name="item_category",
    source=online_retail,
    key="stock_code",
    columns={"category": pl.String},
    derive=item_categories,
    defaults={"category": OTHER},
    description="A product's category: keyword rules on the description of its first sale (person_rules.py).",
)

by_person = ThroughIdentity(ids=("customer_id", "anonymous_id"), own="anonymous_id")


def _counts() -> tuple[Feature, ...]:
    return tuple(
        Feature(
            name=f"{kind}_{window_name(w)}",
            dtype=pl.Int64,
            description=f"{what} in the {w.days} days before the partition's end, over all the person's ids.",
            min=0 if w != max(COUNT_WINDOWS) else 1,
        )
        for w in COUNT_WINDOWS
        for kind, what in (("sessions", "Distinct sessions"), ("events", "Events"))
    )


person_profile_view = FeatureView(
    name="person_profile",
    entity=person,
    source=behaviour_events,
    identity=by_person,
    lookups=(item_category,),
    description="The dynamic profile of a person seen in 30 days: activity, funnel, context, category "
    "interests, intents and a 32-float32 profile vector; served by any of the person's ids.",
    windows=COUNT_WINDOWS,
    features=(
        *_counts(),
        Feature(name="product_views_30d", dtype=pl.Int64, description="Product views in 30 days.", min=0),
        Feature(name="add_to_carts_30d", dtype=pl.Int64, description="Add-to-carts in 30 days.", min=0),
        Feature(name="purchases_30d", dtype=pl.Int64, description="Purchase events in 30 days.", min=0),
        Feature(
            name="last_seen_at",
            dtype=pl.Datetime("us", "UTC"),
            description="Time of the person's latest event before the partition's end.",
        ),
        Feature(
            name="last_device_type",
            dtype=pl.String,
            description="Device type of the latest event.",
            allowed=("desktop", "mobile", "tablet"),
        ),
        Feature(name="last_locale", dtype=pl.String, description="Locale of the latest event (e.g. en-GB)."),
        Feature(
            name="avg_session_minutes_30d",
            dtype=pl.Float64,
            description="Mean first-to-last event span of the person's sessions in 30 days, in minutes.",
            min=0,
        ),
        Feature(
            name="intent_ready_to_buy",
            dtype=pl.Boolean,
            description="A session in 7 days added to the cart without buying.",
        ),
        Feature(
            name="intent_comparing",
            dtype=pl.Boolean,
            description="A session in 7 days viewed three or more distinct products.",
        ),
        *(
            Feature(
                name=f"interest_{c}",
                dtype=pl.Float64,
                description=f"Share of the person's weighted product interactions (view 1, cart 3, purchase 5) "
                f"in 30 days that were in category {c!r}; the shares sum to 1 (0 without interactions).",
                min=0,
                max=1,
            )
            for c in CATEGORIES
        ),
        Feature(
            name="view_to_purchase_rate_30d",
            dtype=pl.Float64,
            description="purchases_30d / product_views_30d; null without product views.",
            nullable=True,
            min=0,
        ),
        Feature(
            name="intent_browsing",
            dtype=pl.Boolean,
            description="Active in 7 days, neither ready to buy nor comparing.",
        ),
        Feature(
            name="profile_vector",
            dtype=pl.List(pl.Float32),
            description=f"{VECTOR_SIZE} float32: the interest shares through a fixed seeded projection, "
            "L2-normalized (all zeros without interactions). Served as little-endian float32 bytes.",
            length=VECTOR_SIZE,  # a blocking check: exactly this many elements, each finite (checks/quality.py)
        ),
    ),
    transformation=person_profile,
    purposes=("personalization",),
    owner="team:personalization",
    tags={"domain": "person", "model_family": "personalization"},
    sensitivity="public",
    version=1,
    online=True,
    online_ttl=timedelta(days=3),
    offline_lookback=timedelta(days=2),
    max_source_lag=timedelta(days=3),
    min_completeness=0.9,
)

person_location_view = FeatureView(
    name="person_location",
    entity=person,
    source=behaviour_events,
    identity=by_person,
    description="SENSITIVE: the country a person's locales point to, inferred; kept apart from the public "
    "profile, in the sensitive namespace, for services granted it.",
    windows=(max(COUNT_WINDOWS),),
    features=(
        Feature(
            name="inferred_country",
            dtype=pl.String,
            description="ISO 3166 country of the locale the person's events in 30 days carry most (ties: the "
            "latest); inferred, not declared by the person.",
            expectations=(Expectation("expect_column_values_to_match_regex", regex=r"^[A-Z]{2}$"),),
            inputs=("locale", "event_time"),
            sensitivity="confidential",
        ),
    ),
    transformation=person_location,
    purposes=("personalization",),
    owner="team:personalization",
    tags={"domain": "person"},
    sensitivity="confidential",
    version=1,
    online=True,
    online_ttl=timedelta(days=3),
    offline_lookback=timedelta(days=2),
)
