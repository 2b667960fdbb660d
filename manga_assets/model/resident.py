"""One split of a training set copied onto the training device, so that a step gathers its batch
there instead of reading the memory maps and copying the batch over.

On a GPU the per-step host reads and host-to-device copies are a large share of a step that
takes milliseconds; the training split of 9,000 galaxies is about 1.6 GB (x and weight float32,
valid bool: 175 kB a galaxy), a few per cent of a data-centre GPU. On the CPU the memory maps
already are memory (the page cache), and a copy would double what training holds, so by default
(`resident_by_default`) a split is resident on a GPU only.
"""

from __future__ import annotations

import numpy as np
import torch

from manga_assets.model.dataset import Batch, TrainingSet

# A resident split may take at most this share of the GPU memory free before training: the
# model's activations (a few GB at batch 32) need the rest.
GPU_MEMORY_SHARE = 0.5


def split_bytes(training_set: TrainingSet, split: str) -> int:
    """Bytes the maps, weights and masks of one split take in memory."""
    per_galaxy = sum(
        array[0].nbytes for array in (training_set.flux, training_set.valid, training_set.weight)
    )
    return per_galaxy * len(training_set.rows(split))


def resident_by_default(training_set: TrainingSet, split: str, device: torch.device) -> bool:
    """Whether a split goes onto ``device`` when the training configuration does not say: on a
    GPU when it takes under `GPU_MEMORY_SHARE` of the free memory, never on the CPU."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return split_bytes(training_set, split) < GPU_MEMORY_SHARE * free


class ResidentSplit:
    """The galaxies of one split on a device; ``__getitems__`` gives the same `Batch` as
    `manga_assets.model.dataset.GalaxyMapsDataset` (rows sorted), with tensors on the device.

    Parameters
    ----------
    training_set : TrainingSet
    split : str
    device : torch.device
    chunk : int
        Galaxies copied at a time, which bounds the host memory the copy takes.
    """

    def __init__(
        self, training_set: TrainingSet, split: str, device: torch.device, chunk: int = 512
    ) -> None:
        self.training_set = training_set
        self.split = split
        self.rows = training_set.rows(split)  # ascending
        self.device = device
        self.x, self.valid, self.weight = (
            self._copy(array, chunk)
            for array in (training_set.flux, training_set.valid, training_set.weight)
        )

    def _copy(self, array: np.ndarray, chunk: int) -> torch.Tensor:
        resident = torch.empty(
            (len(self.rows), *array.shape[1:]),
            dtype=torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype,
            device=self.device,
        )
        for start in range(0, len(self.rows), chunk):
            rows = self.rows[start : start + chunk]
            block = torch.from_numpy(np.ascontiguousarray(array[rows]))
            resident[start : start + len(rows)] = block
        return resident

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, items: list[int]) -> Batch:
        positions = np.sort(np.asarray(items, dtype=np.int64))  # rows ascending: rows sorted
        index = torch.from_numpy(positions).to(self.device, non_blocking=True)
        return Batch(
            x=self.x.index_select(0, index),
            valid=self.valid.index_select(0, index),
            weight=self.weight.index_select(0, index),
            rows=self.rows[positions],
        )
