"""Feature services: the contract between a model and the features it is served and trained on."""

from feature_pipelines.spec import FeatureService

ranking_model_v1 = FeatureService(
    name="ranking_model_v1",
    features=(
        "user_purchase_behavior:*",
        "user_context:country",
        "user_context:currency",
        "item_popularity:*",
    ),
    owner="team:personalization",
    description="Ranks candidate items for a customer: the customer's behaviour and context, the item's pull.",
)
