"""Encoded image files -> uint8 (B, 3, S, S): the one decoder behind the in-memory and the streamed path.

JPEGs are decoded by torchvision.io.decode_jpeg (libjpeg-turbo; on CPU about 5x faster than PIL for small
images, and the same pixels as PIL's libjpeg-turbo on the CIFAR-10 archive and the tests' files), other formats
by PIL; both to RGB. Images not already S x S are resized with torchvision's antialiased bilinear resize on uint8
(within 1 grey level of PIL's BILINEAR). `decode_on_device` is the same with the JPEG decode and the resize on
another device (nvJPEG on CUDA): used with data.decode_device=cuda, where the workers only read bytes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from simclr.data.formats import DataError

JPEG_MAGIC = b"\xff\xd8\xff"
# part of the in-memory cache key: a change of decoder or resize must not serve pixels decoded by the old one
DECODER_VERSION = "tv-jpeg+tv-resize-uint8/1"


@dataclass
class EncodedBatch:
    """A batch still encoded (data.decode_device=cuda): the files' bytes back to back in `data` (uint8, 1-D),
    image k is data[starts[k]:starts[k] + lengths[k]]; names are for error messages."""
    data: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    names: list[str]

    def blobs(self) -> list[torch.Tensor]:
        return list(torch.split(self.data, self.lengths.tolist()))


def as_tensor(blob: bytes | bytearray | torch.Tensor) -> torch.Tensor:
    if isinstance(blob, torch.Tensor):
        return blob
    return torch.frombuffer(bytearray(blob) if isinstance(blob, bytes) else blob, dtype=torch.uint8)


def _is_jpeg(blob: bytes | bytearray | torch.Tensor) -> bool:
    head = blob[:3] if not isinstance(blob, torch.Tensor) else blob[:3].numpy().tobytes()
    return head == JPEG_MAGIC


def _decode_jpegs(blobs: list[torch.Tensor], names: Sequence[str], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:  # one call per batch: on CUDA a batched nvJPEG decode
        return decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        for j, blob in enumerate(blobs):  # find the file to name
            try:
                decode_jpeg(blob, mode=ImageReadMode.RGB, device=device)
            except RuntimeError as e:
                reason = str(e).splitlines()[0].rsplit(", ", 1)[-1]  # drop torchvision's source location
                raise DataError(f"{names[j]}: not a readable image (JPEG: {reason}).") from None
        raise


class LazyNames:
    """A sequence of n image names for error messages, each built by name(k) only when asked for: names are
    needed only to report a file that fails to decode."""

    def __init__(self, name: Callable[[int], str], n: int):
        self.name, self.n = name, n

    def __getitem__(self, k: int) -> str:
        return self.name(k)

    def __len__(self) -> int:
        return self.n


def _decode_pil(blob: torch.Tensor, name: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(blob.numpy().tobytes())).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{name}: not a readable image ({e}).") from None
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _resized(images: list[torch.Tensor], size: int | None) -> torch.Tensor:
    """Stacked, the images of each shape resized in one call (channels_last: torch's fast uint8 antialiased
    kernel on CPU)."""
    from torchvision.transforms.v2.functional import resize

    shapes = [x.shape for x in images]
    distinct = set(shapes)
    if size is None and len(distinct) > 1:
        raise DataError(f"images have different sizes {sorted(distinct)[:3]}...; set data.image_size to resize them.")
    side = [size, size] if size is not None else list(shapes[0][-2:])
    if len(distinct) == 1:  # the common case: one stack, one resize (none when stored at the training size)
        out = torch.stack(images)
        return out if list(out.shape[-2:]) == side else \
            resize(out.contiguous(memory_format=torch.channels_last), side, antialias=True).contiguous()
    out = torch.empty((len(images), 3, *side), dtype=torch.uint8, device=images[0].device)
    for shape in distinct:
        ks = [k for k, s in enumerate(shapes) if s == shape]
        group = torch.stack([images[k] for k in ks])
        out[ks] = group if list(shape[-2:]) == side else \
            resize(group.contiguous(memory_format=torch.channels_last), side, antialias=True)
    return out


def decode_images(blobs: Sequence[bytes | bytearray | torch.Tensor], size: int | None, names: Sequence[str],
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Encoded files (bytes or 1-D uint8 CPU tensors) -> uint8 (B, 3, size, size) on `device`; names for errors.
    JPEGs are decoded on `device`, other formats by PIL on the CPU, then moved; the resize runs on `device`."""
    device = torch.device(device)
    for k, b in enumerate(blobs):
        if len(b) == 0:  # common after a failed download; torch.frombuffer would fail deep inside
            raise DataError(f"{names[k]}: empty file (0 bytes); re-download or remove it.")
    jpeg = [k for k, b in enumerate(blobs) if _is_jpeg(b)]
    tensors = [as_tensor(b) for b in blobs]
    images: list[torch.Tensor | None] = [None] * len(tensors)
    if jpeg:
        jpeg_names = LazyNames(lambda j: names[jpeg[j]], len(jpeg))
        for k, img in zip(jpeg, _decode_jpegs([tensors[k] for k in jpeg], jpeg_names, device)):
            images[k] = img
    for k in sorted(set(range(len(tensors))) - set(jpeg)):
        images[k] = _decode_pil(tensors[k], names[k]).to(device)
    return _resized(images, size)


def decode_on_device(batch: EncodedBatch, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """data.decode_device=cuda: the module decodes a batch its workers only read (labels stay where they are)."""
    return decode_images(batch.blobs(), size, batch.names, device), batch.labels
