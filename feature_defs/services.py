"""Feature services: the contract between a model and the features it is served and trained on."""

from feature_pipelines.spec import FeatureService, TrainingSetSpec

ranking_model_v1 = FeatureService(
    name="ranking_model_v1",
    features=(
        "user_purchase_behavior:*",
        "user_context:country",
        "user_context:currency",
        "item_popularity:*",
    ),
    owner="team:personalization",
    purpose="personalization",
    # Who reads it online: `fstore acl` gives each a Redis user that reads exactly these views' keys.
    consumers=("team:ranking",),
    description="Ranks candidate items for a customer: the customer's behaviour and context, the item's pull.",
)

personalization_profile_v1 = FeatureService(
    name="personalization_profile_v1",
    features=("person_profile:*",),
    owner="team:personalization",
    purpose="personalization",
    # Reads by any of a person's ids (`OnlineClient.get_by_alias`): its Redis user also gets FCALL_RO.
    consumers=("team:personalization",),
    description="Personalizes a visit by whatever id the caller holds (cookie, device, customer): the "
    "person's public profile (activity, funnel, context, interests, intents, profile vector).",
)

# Labels: did the customer buy the item again within 30 days? Derived from the UCI data by
# data/make_repurchase_labels.py (20,000 sampled purchases, deterministic).
ranking_repurchase_train = TrainingSetSpec(
    name="ranking_repurchase_train",
    service="ranking_model_v1",
    labels="data/repurchase_labels.parquet",
    timestamp_column="event_timestamp",
    owner="team:personalization",
    description="ranking_model_v1 features as known at each purchase, with its 30-day repurchase label.",
)
