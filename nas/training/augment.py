"""Batched, on-device augmentation for ``nas train`` (kornia), and the matching evaluation preprocessing.

The images stay on the training device as uint8 at their own resolution; every batch is cut out of
them, augmented as one tensor and handed to the training step with a fixed shape for the whole stage
(so a CUDA-graphed step can replay it). Per batch:

1. random-resized crop to the stage's image size (aspect 3/4-4/3, area from ``crop_min_area`` (default
   50 %) to 100 %: the Inception crop, with a larger minimum area than ImageNet's 8 % because small,
   low-resolution images lose their content when cut to a few pixels);
2. horizontal flip (optional; off for data where mirroring changes the class);
3. RandAugment with 2 operations at the stage's magnitude (kornia: the two operations are drawn per
   batch, their signs per image; magnitude 0 means no RandAugment). ``color`` is left out for images
   that are not RGB;
4. normalisation by the train split's per-channel mean and std;
5. mixup with the stage's alpha: each image mixed with another one of the batch, ``lambda ~ Beta(a, a)``
   per image, giving soft targets (alpha 0: plain one-hot targets).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment
from kornia.augmentation.auto.rand_augment.rand_augment import default_policy

CROP_MIN_AREA = 0.5
CROP_RATIO = (3 / 4, 4 / 3)
RANDAUG_LAYERS = 2
RANDAUG_MAX = 30.0  # kornia's magnitude scale, the paper's (0, 30)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, on the images' device, in [0, 1] units."""
    x = images.float().div_(255.0)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


class TrainAugment(torch.nn.Module):
    """Turn a uint8 batch into a normalised, augmented float batch and soft targets for one stage."""

    def __init__(self, image_size: int, randaug: float, mixup: float, num_classes: int,
                 mean: torch.Tensor, std: torch.Tensor, flip: bool = True,
                 crop_min_area: float = CROP_MIN_AREA) -> None:
        super().__init__()
        channels = int(mean.numel())
        ops: list[torch.nn.Module] = [K.RandomResizedCrop((image_size, image_size), scale=(crop_min_area, 1.0),
                                                          ratio=CROP_RATIO)]
        if flip:
            ops.append(K.RandomHorizontalFlip())
        if randaug > 0:
            policy = [p for p in default_policy if channels == 3 or p[0][0] != "color"]
            magnitude = min(float(randaug), RANDAUG_MAX - 1e-3)  # kornia wants m strictly inside (0, 30)
            ops.append(RandAugment(n=RANDAUG_LAYERS, m=magnitude, policy=policy))  # type: ignore[arg-type]
        self.augment = K.AugmentationSequential(*ops)
        self.mixup = float(mixup)
        self.num_classes = int(num_classes)
        self.register_buffer("mean", mean.float(), persistent=False)
        self.register_buffer("std", std.float(), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.augment(images.float().div_(255.0)).clamp_(0.0, 1.0)
        x = _normalise(x, self.mean, self.std)
        y = F.one_hot(labels, self.num_classes).to(x.dtype)
        if self.mixup > 0:
            x, y = mixup(x, y, self.mixup)
        return x.contiguous(), y


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every image (and its target) with a partner from the same batch, ``lambda ~ Beta(alpha, alpha)``."""
    concentration = torch.tensor(float(alpha), device=x.device)
    lam = torch.distributions.Beta(concentration, concentration).sample((x.shape[0],))
    partner = torch.randperm(x.shape[0], device=x.device)
    lam_x = lam.view(-1, 1, 1, 1).to(x.dtype)
    lam_y = lam.view(-1, 1).to(y.dtype)
    return lam_x * x + (1 - lam_x) * x[partner], lam_y * y + (1 - lam_y) * y[partner]


def eval_batch(images: torch.Tensor, image_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Plain preprocessing for evaluation: resize the whole image (antialiased when shrinking), normalise."""
    x = images.float().div_(255.0)
    if x.shape[-2:] != (image_size, image_size):
        shrink = x.shape[-1] > image_size or x.shape[-2] > image_size
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=shrink)
    return _normalise(x, mean, std).contiguous()
