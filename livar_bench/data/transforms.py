"""Batched image transforms that run where the images are (the accelerator when there is one).

Training: RandomResizedCrop (area ``scale``, aspect ratio 3/4..4/3) + horizontal flip, done for a whole
batch with one ``affine_grid``/``grid_sample`` call; evaluation: central crop of ``eval_crop`` of each
side (Resize(256) + CenterCrop(224) keeps 224/256 = 0.875) then resize. Both end with the backbone's
normalisation. Randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=64)
def _channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A [1, 3, 1, 1] constant, built once per device: ``torch.tensor(list, device=cuda)`` copies from
    pageable host memory, which blocks the host until the stream is idle, once per step otherwise."""
    return torch.tensor(values, dtype=dtype).view(1, 3, 1, 1).to(device)


@dataclass(frozen=True)
class DeviceTransform:
    """Uint8 [B, 3, H, W] images -> normalised float [B, 3, size, size] model inputs."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    eval_crop: float = 0.875

    def _normalise(self, x: Tensor) -> Tensor:
        mean = _channel_constant(self.mean, x.device, x.dtype)
        std = _channel_constant(self.std, x.device, x.dtype)
        return (x - mean) / std

    def train(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Random resized crop + flip, batched. Crop boxes are sampled in one shot (no retry loop):
        the box side is clipped to the image, a small deviation from torchvision's rejection sampling."""
        b = images.shape[0]
        dev = images.device
        u = torch.rand(b, 4, generator=generator, device=dev)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[:, 1]
        aspect = torch.exp(log_r)
        w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width as a fraction of the image width
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (1 - w) * u[:, 2] + w / 2  # crop centre in [w/2, 1 - w/2]
        cy = (1 - h) * u[:, 3] + h / 2
        flip = torch.rand(b, generator=generator, device=dev) < 0.5
        sx = torch.where(flip, -w, w)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = sx
        theta[:, 0, 2] = 2 * cx - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * cy - 1
        grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
        x = images.float().div_(255.0)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return self._normalise(out)

    def eval(self, images: Tensor) -> Tensor:
        """Deterministic central crop and resize."""
        _, _, h, w = images.shape
        ch, cw = max(1, round(h * self.eval_crop)), max(1, round(w * self.eval_crop))
        top, left = (h - ch) // 2, (w - cw) // 2
        x = images[:, :, top : top + ch, left : left + cw].float().div_(255.0)
        if (ch, cw) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=ch > self.size)
        return self._normalise(x)
