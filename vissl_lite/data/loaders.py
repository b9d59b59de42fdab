"""Batches of uint8 images on the device.

:class:`DeviceLoader` serves sets that were decoded once and moved to the device: a batch is an index gather, no
workers, no host round trip. :class:`StreamLoader` decodes files in DataLoader workers and moves pinned uint8
batches. Both give the same epoch order for the same (seed, epoch), which is what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from vissl_lite.data.datasets import ImageSet
from vissl_lite.data.decode import decode_image
from vissl_lite.data.readers import DataError


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class DeviceLoader:
    """Shuffled batches from a uint8 (N, C, S, S) tensor that lives on ``device``.

    Args:
        data: a decoded ImageSet.
        rank, world_size: each rank takes every world_size-th index of the shared permutation.
    """

    def __init__(self, data: ImageSet, batch_size: int, device: torch.device, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        if data.images is None:
            raise ValueError("DeviceLoader needs a decoded ImageSet (images, not files)")
        self.images = data.images.to(device)  # (N, C, S, S) uint8, moved once
        self.labels = data.labels.to(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0
        n_local = len(self.images) // world_size
        if drop_last and n_local < batch_size:
            share = f" ({n_local} for each of {world_size} processes)" if world_size > 1 else ""
            raise ValueError(f"{data.name}/{data.split} has {len(self.images)} images{share}, fewer than one batch "
                             f"of {batch_size}{' per process' if world_size > 1 else ''}; lower --batch-size")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch``'s order and begin at batch ``start`` (how a resumed run skips what it saw)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        n = len(self.images) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
        order = order[self.rank: n - n % self.world_size: self.world_size].to(self.images.device)
        for i in range(self.start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


class _FileDataset(Dataset):
    def __init__(self, data: ImageSet):
        self.files, self.labels = data.files, data.labels
        self.size, self.channels, self.window = data.image_size, data.channels, data.window

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The image, its label and '' or, for a file that cannot be decoded, a blank image and the message: the
        main process raises it, so the error reads as one line and the workers shut down cleanly."""
        try:
            return decode_image(self.files[i], self.size, self.channels, self.window), self.labels[i], ""
        except Exception as e:  # any failure, not only DataError: a traceback from a worker reads as a crash
            message = str(e) if isinstance(e, DataError) else (
                f"cannot decode image {self.files[i]} ({type(e).__name__}: {e}); remove or replace the file")
            blank = torch.zeros((self.channels, self.size, self.size), dtype=torch.uint8)
            return blank, self.labels[i], message


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, seed: int, shuffle: bool, rank: int, world_size: int):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch, self.skip = 0, 0

    def __iter__(self):
        order = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else torch.arange(self.n)
        return iter(order[self.rank: self.n - self.n % self.world_size: self.world_size][self.skip:].tolist())

    def __len__(self) -> int:
        return self.n // self.world_size


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM to the main process, which stops on a step boundary with a checkpoint; a
    signal sent to the whole process group (Ctrl-C, a scheduler's kill) must not kill them first."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StreamLoader:
    """Decode files in ``num_workers`` processes; uint8 batches cross to the device with pinned memory."""

    def __init__(self, data: ImageSet, batch_size: int, device: torch.device, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, num_workers: int = 2, rank: int = 0, world_size: int = 1):
        if data.files is None:
            raise ValueError("StreamLoader needs an ImageSet of files")
        self.device = device
        self.sampler = _EpochSampler(len(data.files), seed, shuffle, rank, world_size)
        self.loader = DataLoader(_FileDataset(data), batch_size=batch_size, sampler=self.sampler,
                                 num_workers=num_workers, pin_memory=device.type == "cuda", drop_last=drop_last,
                                 persistent_workers=num_workers > 0,
                                 # its own generator: making an iterator must not draw from the global RNG, or
                                 # a resumed run's augmentation stream would drift from the uninterrupted one
                                 generator=torch.Generator().manual_seed(seed), worker_init_fn=_ignore_stop_signals)
        if drop_last and len(self.loader) == 0:
            raise ValueError(f"{data.name}/{data.split} has fewer images than one batch of {batch_size}; "
                             "lower --batch-size")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch``'s order and begin at batch ``start``; skipped files are never decoded."""
        self.sampler.epoch, self.sampler.skip = epoch, start * self.loader.batch_size

    def __len__(self) -> int:
        """Batches in a full epoch."""
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, errors in self.loader:
            if any(errors):
                self.close()
                raise DataError(next(e for e in errors if e))
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the persistent workers now (they would otherwise wait for the next epoch until exit)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None


def make_loader(data: ImageSet, batch_size: int, device: torch.device, shuffle: bool = True, drop_last: bool = True,
                seed: int = 0, num_workers: int = 2, rank: int = 0, world_size: int = 1):
    """DeviceLoader for decoded sets, StreamLoader for file lists."""
    if data.images is not None:
        return DeviceLoader(data, batch_size, device, shuffle, drop_last, seed, rank, world_size)
    return StreamLoader(data, batch_size, device, shuffle, drop_last, seed, num_workers, rank, world_size)
