"""What customers' data may be used for: the units of consent (`fstore consent grant|revoke ID --purpose P`)."""

from feature_pipelines.spec import Purpose

personalization = Purpose(
    name="personalization",
    description="Recommendations and rankings shown to the customer on the shop's own pages.",
    opt_in=False,  # the shop's service itself: holds until the customer objects
)

analytics = Purpose(
    name="analytics",
    description="Aggregate reporting and model monitoring inside the company.",
    opt_in=False,
)

ads = Purpose(
    name="ads",
    description="Targeting of advertising on third-party sites: only with the customer's explicit consent.",
    opt_in=True,
)
