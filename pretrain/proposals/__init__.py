"""objcrop.pretrain.proposals: unsupervised object proposals and the store that holds them.

Imports numpy, OpenCV, scikit-image and SciPy only (no torch), so proposal workers fork cheaply.
"""
from objcrop.pretrain.proposals.store import ProposalStore, ProposalStoreError

__all__ = ["ProposalStore", "ProposalStoreError"]
