"""A row of the client matrix in and out of Flower's ``ArrayRecord``."""
import torch
from flwr.app import ArrayRecord


def to_tensor(record: ArrayRecord) -> torch.Tensor:
    return torch.from_numpy(record.to_numpy_ndarrays()[0])


def to_record(row: torch.Tensor) -> ArrayRecord:
    return ArrayRecord([row.detach().cpu().numpy()])
