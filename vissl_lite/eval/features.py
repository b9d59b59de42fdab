"""Frozen features, extracted once per (backbone, split) and reused by every probe."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from vissl_lite.data import ImageSet, make_loader


@torch.no_grad()
def extract_features(embed: Callable[[torch.Tensor], torch.Tensor], data: ImageSet, view: torch.nn.Module,
                     device: torch.device, batch_size: int = 512, progress: bool = True,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``embed`` over ``data`` through the deterministic eval ``view``.

    Returns:
        features (N, D) float32 and labels, both on ``device``, in dataset order.
    """
    loader = make_loader(data, batch_size, device, shuffle=False, drop_last=False, num_workers=0)
    feats, labels = [], []
    amp = device.type == "cuda"
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            f = embed(view(x)[0])  # (B, D)
        feats.append(f.float())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)
