"""``python -m mllib.distributed`` / ``torchrun ... -m mllib.distributed``: lecture 03's gossip
and D-PSGD as real processes over torch.distributed (the runner is
``mllib.decentralized.distributed``; this is the short name the README uses)."""
from .decentralized.distributed import DistributedError, RunConfig, launch, main

__all__ = ["DistributedError", "RunConfig", "launch", "main"]

if __name__ == "__main__":
    main()
