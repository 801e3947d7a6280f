"""A tiny linear classifier and random (x, y) batches shared by the metric tests."""
import torch
from torch import nn


def tiny_model(seed=0, num_classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, num_classes))


def tiny_data(n, seed, num_classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 4, 4, generator=g), torch.randint(num_classes, (n,), generator=g)
