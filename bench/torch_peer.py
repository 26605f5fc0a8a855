"""kstyle's ``johnson`` transform net written in PyTorch, as pytorch/examples' fast_neural_style
writes it: the peer that bench/tuned_paths.py times against (random weights: the same
arithmetic as trained ones). Every layer matches ``kstyle.transform_net.build_johnson_net``'s
count, kernel, stride and channels (1,679,235 parameters); zero padding (PyTorch pads a
stride-2 convolution on both sides where Keras's "same" pads one, which changes no FLOP).

    python bench/torch_peer.py      # prints the parameter count
"""

import torch
from torch import nn


def conv_norm(channels_in, channels_out, kernel, stride=1, relu=True):
    """A convolution, an instance norm with scale and offset, and a ReLU (``relu``)."""
    layers = [
        nn.Conv2d(channels_in, channels_out, kernel, stride, padding=kernel // 2),
        nn.InstanceNorm2d(channels_out, affine=True, eps=1e-5),
    ]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU, conv-norm, plus the input."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(
            conv_norm(channels, channels, 3), conv_norm(channels, channels, 3, relu=False)
        )

    def forward(self, x):
        return x + self.body(x)


class JohnsonNet(nn.Module):
    """(B, 3, H, W) float RGB in [0, 255] -> the same shape, ``127.5 * (tanh + 1)``."""

    def __init__(self, blocks=5):
        super().__init__()
        self.net = nn.Sequential(
            conv_norm(3, 32, 9),
            conv_norm(32, 64, 3, 2),
            conv_norm(64, 128, 3, 2),
            *[ResidualBlock(128) for _ in range(blocks)],
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_norm(128, 64, 3),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_norm(64, 32, 3),
            nn.Conv2d(32, 3, 9, padding=4),
        )

    def forward(self, x):
        return 127.5 * (torch.tanh(self.net(x)) + 1)


def johnson_net(seed=0) -> JohnsonNet:
    """The net with seeded random weights and random norm scales and offsets."""
    torch.manual_seed(seed)
    net = JohnsonNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.add_(torch.rand_like(module.weight))
                module.bias.copy_(torch.randn_like(module.bias) * 0.3)
    return net


if __name__ == "__main__":
    print(sum(parameter.numel() for parameter in johnson_net().parameters()))
