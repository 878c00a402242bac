"""Augmentation: op registry, policies, the two-view pipeline. The only room that imports kornia."""
from simclr.augment.pipeline import TwoViewAugmenter, eval_preprocess, single_op
from simclr.augment.policy import Policy, load as load_policy, from_dict as policy_from_dict
from simclr.augment.registry import REGISTRY

__all__ = ["TwoViewAugmenter", "eval_preprocess", "single_op", "Policy", "load_policy", "policy_from_dict", "REGISTRY"]
