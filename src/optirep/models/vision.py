"""Image models: torchvision ResNet-18, the two seeds' small CNNs, and FCN-ResNet50 segmentation."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.segmentation import fcn_resnet50 as tv_fcn_resnet50


class ResNet18(tv_resnet.ResNet):
    """torchvision ResNet-18 with a `num_classes` fc, optional CIFAR stem, and `features(x)`.

    A subclass of `torchvision.models.ResNet` built exactly as `resnet18(weights=None)` builds
    it (BasicBlock, [2, 2, 2, 2], torchvision's Kaiming init), so module names, parameter
    tensors and `state_dict` keys are torchvision's. The seed builds the 1000-class model and
    then assigns `fc = Linear(512, num_classes)`; constructing with `num_classes` directly gives
    the same architecture and the same init distribution (torchvision leaves fc at nn.Linear's
    default init in both cases).
    """

    def __init__(self, num_classes: int = 10, cifar_stem: bool = False, in_channels: int = 3):
        super().__init__(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        if cifar_stem:
            # The usual CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, so layer4 is 4x4 on
            # 32x32 inputs instead of 1x1 (the ImageNet stem throws away 16x of the resolution).
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if cifar_stem or in_channels != 3:
            # A replaced conv1 gets the init torchvision gives every conv.
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled layer4 output [B, 512] (the input of `fc`)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet18(num_classes: int = 10, cifar_stem: bool = False, in_channels: int = 3) -> ResNet18:
    """BiostatisV6's CIFAR model: `torchvision.models.resnet18(weights=None)`, fc -> Linear(512, C).

    Seed: Hindolch/V6-optimizer `experiments/resnet18_compare.py` (seeds-spec 1(e)): the
    unmodified ImageNet stem (7x7/2 conv + 3x3/2 max-pool) on 32x32 inputs, so layer4 is 1x1.
    `cifar_stem=True` is the full-strength CIFAR baseline (3x3/1 conv1, no max-pool; ~10x the
    compute) that the NeuroPlastic ResNet-18 claim (4(d)5) is assumed to use.
    11,181,642 parameters for 10 classes, 11,227,812 for 100.
    """
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    return ResNet18(num_classes=num_classes, cifar_stem=cifar_stem, in_channels=in_channels)


class GRNSimpleCNN(nn.Module):
    """GradRetentionNet's SimpleCNN: two conv3x3-ReLU-maxpool stages, FC 64*(s/4)^2 -> 128 -> C."""

    def __init__(self, in_channels: int = 1, input_size: int = 28, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(64 * (input_size // 4) ** 2, 128)
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d hidden FC activations [B, 128]."""
        return torch.relu(self.fc1(torch.flatten(self.conv(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def grn_simplecnn(in_channels: int = 1, input_size: int = 28, num_classes: int = 10) -> GRNSimpleCNN:
    """EnhancedSGD's SimpleCNN (MNIST: 1x28x28 -> FC 3136; CIFAR-10: 3x32x32 -> FC 4096).

    Seed: waefrebeorn/GradRetentionNet `main.py @ d87c684` (seeds-spec 2(e)): conv3x3(C->32)
    + ReLU + maxpool, conv3x3(32->64) + ReLU + maxpool, FC -> 128 + ReLU, FC 128 -> 10.
    `input_size` must be a multiple of 4 (two 2x2 pools); the images must be square.
    """
    _check_positive(in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    if input_size % 4:
        raise ValueError(f"grn_simplecnn: input_size must be a multiple of 4, got {input_size}")
    return GRNSimpleCNN(in_channels, input_size, num_classes)


class SmallCIFARNet(nn.Module):
    """NeuroPlastic's SmallCIFARNet: conv32-conv64-pool-conv128-pool, FC -> 256, Dropout, FC -> C."""

    def __init__(self, in_channels: int = 3, input_size: int = 32, num_classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(128 * (input_size // 4) ** 2, 256)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(256, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 256-d hidden FC activations after ReLU and dropout [B, 256]."""
        return self.dropout(torch.relu(self.fc1(torch.flatten(self.conv(x), 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def np_small_cifar(in_channels: int = 3, input_size: int = 32, num_classes: int = 10, dropout: float = 0.2) -> SmallCIFARNet:
    """NeuroPlastic's CIFAR-10 pipeline model (FC 8192 -> 256 at 3x32x32; 2,193,226 parameters).

    Seed: Sunnylincc/NeuroPlastic-Optimizer `models/cnn.py` (seeds-spec 4(d)5): 3x3 convs with
    padding 1, ReLU after each, 2x2 max-pools, dropout 0.2 before the last Linear.
    """
    _check_positive(in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    if input_size % 4:
        raise ValueError(f"np_small_cifar: input_size must be a multiple of 4, got {input_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"np_small_cifar: dropout must be in [0, 1), got {dropout}")
    return SmallCIFARNet(in_channels, input_size, num_classes, dropout)


class FCNResNet50(nn.Module):
    """torchvision FCN-ResNet50 whose forward returns the "out" logits tensor, not a dict."""

    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.net = tv_fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def fcn_resnet50(num_classes: int = 21) -> FCNResNet50:
    """EnhancedSGD's "SimpleUNet": `fcn_resnet50(weights=None, weights_backbone=None, num_classes=21)`.

    Seed: waefrebeorn/GradRetentionNet `main.py` (seeds-spec 2(e)), Pascal VOC 2012. No aux head
    (torchvision's default without weights). forward(x [B, 3, H, W]) -> logits [B, C, H, W].
    Not a classifier: no `features`, and `final_linear` raises (the last layer is a 1x1 conv).
    32,957,013 parameters for 21 classes.
    """
    _check_positive(num_classes=num_classes)
    return FCNResNet50(num_classes)


def _check_positive(**sizes: int) -> None:
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
