"""The model contract of a feature service, checked against what is deployed.

A service's contract (`Catalog.contract`) is, per deployed view (`user_context`, `user_context@2`), the
features it consumes and their dtypes; the lock file pins them. Serving and training refuse a deployment
that does not match: a feature deployed with another dtype than the contract's. A feature the deployment
does not have yet (added since the last write) is not a mismatch: it reads as null, in serving and in
training alike, until it is written (additive changes never break a consumer).
"""

from __future__ import annotations

from collections.abc import Mapping


class ContractError(ValueError):
    """What is deployed does not match a feature service's contract; nothing was returned."""


def mismatches(
    service: str, view: str, expected: Mapping[str, str], deployed: Mapping[str, str], where: str
) -> list[str]:
    """Each consumed feature of `view` that `deployed` (feature -> dtype) has with another dtype."""
    return [
        f"feature service {service!r} consumes {view}:{feature} as {dtype} (its contract), but {where} has "
        f"{deployed[feature]}; nothing is cast silently: redeploy the view as declared, or declare the change as "
        "a new view version and move the service to it"
        for feature, dtype in expected.items()
        if feature in deployed and deployed[feature] != dtype
    ]
