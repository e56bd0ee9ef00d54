"""Self-checks for lab 07_privacy."""
import torch

from ..privacy import dp, secure_aggregation
from ..privacy.attacks import membership_auc
from ..runtime import rand, randn
from . import self_check


@self_check(dp.noisy_clipped_sum)
def clip_and_noise(gen):
    """G (B, d) with rows of norm below, at and above C; sigma 0 and positive; noise (d,)."""
    cases = []
    for b, d, clip, sigma in [(1, 3, 1.0, 0.0), (4, 5, 0.5, 1.0), (8, 10, 2.0, 0.3), (16, 7, 0.1, 2.0), (5, 1, 1.0, 1.0)]:
        G = randn(b, d, gen=gen) * (0.05 + 3 * rand(b, 1, gen=gen))  # norms spread around C
        cases.append(dict(G=G, clip=clip, sigma=sigma, noise=randn(d, gen=gen)))
    G = randn(6, 4, gen=gen)
    G[2] = 0  # a zero gradient stays zero
    cases.append(dict(G=G, clip=1.0, sigma=0.5, noise=randn(4, gen=gen)))
    return cases


@self_check(secure_aggregation.pairwise_mask)
def pairwise_mask(gen):
    """Client i of n with 32-byte seeds shared with every other client; vectors of length d."""
    cases = []
    for n, i, d in [(2, 0, 3), (2, 1, 3), (4, 2, 6), (5, 0, 5), (5, 4, 2), (6, 3, 8)]:
        seeds = {j: bytes(torch.randint(0, 256, (32,), generator=gen, dtype=torch.uint8).tolist()) for j in range(n) if j != i}
        cases.append(dict(i=i, seeds=seeds, d=d))
    return cases


def loss_threshold_auc_reference(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> torch.Tensor:
    """``membership_auc`` as a 0-d float64 tensor."""
    return torch.tensor(membership_auc(member_losses, nonmember_losses), dtype=torch.float64)


@self_check(loss_threshold_auc_reference)
def loss_threshold_auc(gen):
    """Member and non-member losses of different sizes, overlapping, separated, and with ties."""
    cases = []
    for m, k, shift in [(3, 4, 0.0), (10, 20, 1.0), (50, 30, -0.5), (1, 7, 2.0), (25, 25, 0.0)]:
        cases.append(dict(member_losses=rand(m, gen=gen), nonmember_losses=rand(k, gen=gen) + shift))
    ties = torch.tensor([0.0, 1.0, 1.0, 2.0])
    cases.append(dict(member_losses=ties, nonmember_losses=torch.tensor([1.0, 1.0, 3.0])))
    return cases
