"""The one rule for what a row's Δ is measured against (the report's tables and the study pages).

A row is read against a random-crop row of the same setting (method, epochs, architecture,
pretraining data: the caller groups by those). A tagged row — a variant of a setting, e.g.
`obj-obj-dilate-no-colour`, `obj-obj-dilate-4x` (the run tag joined to the policy by
`objcrop.records.Provenance.policy_label`) — is read against the random-crop row with the same
tag (`random-no-colour`) when there is one: the tag changes the budget or the augmentations, and
only a baseline that had the same change isolates the policy. A tag that ends in another run's tag
names a variant of that run's recipe (`explore-b256-200e-bf16`: the study's exploratory arms, run in
the registered `b256-200e-bf16` recipe under a tag of their own so that selecting the registered tag
leaves them out): without random crops of its own, it is read against that recipe's random crops
(the longest tag its own ends in). Without either it falls back to plain random crops. A tagged
random-crop row is read against plain random crops (what its tag alone changes); plain random crops
have no baseline.
"""
from typing import Iterable, Optional

BASELINE_POLICY = "random"
_TAGGED = BASELINE_POLICY + "-"


def is_random_crop(policy: str) -> bool:
    """Random-crop rows, tagged or not (`random`, `random-no-colour`)."""
    return policy == BASELINE_POLICY or policy.startswith(_TAGGED)


def baseline_policy(policy: str, candidates: Iterable[str]) -> Optional[str]:
    """The policy label of the row that `policy` is read against, among the policy labels of the
    rows of its setting (`candidates`); None when it has none (or is plain random crops)."""
    randoms = {c for c in candidates if is_random_crop(c)}
    if policy == BASELINE_POLICY:
        return None
    # the longest tag that matches wins, so `-lr-moco` is not mistaken for a tag `moco`
    tagged = sorted((c for c in randoms if c != BASELINE_POLICY and c != policy and not is_random_crop(policy)
                     and policy.endswith("-" + c[len(_TAGGED):])), key=len, reverse=True)
    if tagged:
        return tagged[0]
    return BASELINE_POLICY if BASELINE_POLICY in randoms else None
