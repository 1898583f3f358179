"""``lstm_unet``: U-Net with a ConvLSTM cell opening every encoder level, on frame windows.

The Cell Tracking Challenge time-lapse approach of Arbelle & Raviv (2019, "Microscopy
cell segmentation via convolutional LSTM networks"): each frame is segmented from
itself and the ``frames - 1`` frames before it in its sequence, so the network can
use motion and the appearance of a cell in earlier frames.

Network (:class:`ConvLSTMUNet`), ``(B, frames * in_channels, H, W) -> (B, 3, H, W)``:
the input stacks the window's frames along the channel axis, oldest first
(:mod:`cellbench.sequences`); it is viewed as ``(B, T, C, H, W)``. Every encoder level
starts with a :class:`ConvLSTMCell` run over the ``T`` steps (its input at step ``t``
is the previous level's output for step ``t``, max-pooled by 2 from the second level
on), followed by two 3x3 convolutions + batch norm + ReLU applied to every step. A
level's skip connection is its output at the last step; the decoder is a plain U-Net
decoder (transposed-convolution upsampling, concatenated skip, two convolutions) on
the last step only, and a 1x1 convolution gives the logits of the last frame's
background / interior / boundary classes.

Everything after the network is the ``unet`` family's (:class:`cellbench.models.unet.UNet`):
the target, loss, softmax maps, threshold grid and seeded watershed, plus the
optional per-instance closing / area opening of the source project
(``closing_radius``, ``area_opening``).

Batch norm rather than group norm: in eval mode batch norm is a fixed per-channel
affine map, so a pixel's output does not depend on how large the predicted tile is
and tiled inference agrees with whole-frame inference away from the tile borders
(group norm would normalise with per-tile statistics). H and W must be multiples of
``2 ** (levels - 1)``; inference pads to 32, enough for the 6 levels allowed.

Options: :class:`cellbench.models.options.LSTMUNetOptions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cellbench.models.unet import UNet

__all__ = ["ConvLSTMCell", "ConvLSTMUNet", "LSTMUNet"]


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015, without peepholes).

    The four gates come from one convolution over ``concat(x_t, h_{t-1})``:
    ``i, f, o = sigmoid(.)``, ``g = tanh(.)``, ``c_t = f * c_{t-1} + i * g``,
    ``h_t = o * tanh(c_t)``. The initial state is zero; the forget-gate bias starts
    at 1 so the cell keeps its memory early in training.

    Parameters
    ----------
    in_channels : channels of ``x_t``.
    hidden_channels : channels of ``h_t`` and ``c_t``.
    kernel_size : odd side of the gate convolution ("same" padding).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.in_channels = int(in_channels)
        self.hidden_channels = int(hidden_channels)
        self.conv = nn.Conv2d(
            self.in_channels + self.hidden_channels,
            4 * self.hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
        )
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.bias[self.hidden_channels : 2 * self.hidden_channels].fill_(1.0)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x`` ``(B, in, H, W)``, ``state`` ``(h, c)`` or None (zeros) -> ``(h, c)``.

        ``h`` and ``c`` are ``(B, hidden, H, W)``.
        """
        if state is None:
            b, _, h, w = x.shape
            zeros = x.new_zeros((b, self.hidden_channels, h, w))
            state = (zeros, zeros)
        hidden, cell = state
        gates = self.conv(torch.cat([x, hidden], dim=1))
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell

    def run(self, steps: torch.Tensor) -> torch.Tensor:
        """Run over a sequence ``(B, T, in, H, W)`` from a zero state -> every ``h_t`` ``(B, T, hidden, H, W)``."""
        state = None
        out = []
        for t in range(steps.shape[1]):
            state = self(steps[:, t], state)
            out.append(state[0])
        return torch.stack(out, dim=1)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvLSTMUNet(nn.Module):
    """ConvLSTM U-Net: ``(B, frames * in_channels, H, W) -> (B, classes, H, W)`` logits.

    The input's channels are ``frames`` frames of ``in_channels`` each, oldest first;
    the output belongs to the last frame. See the module docstring for the layout.

    Parameters
    ----------
    in_channels : channels of one frame.
    frames : frames of the window ``T``.
    encoder_channels : feature channels of each encoder level (at least 2 levels);
        H and W of the input must be multiples of ``2 ** (len(encoder_channels) - 1)``.
    classes : output channels.
    seed : when given, the weights are initialised from this seed (the global torch
        random state is left untouched); None draws from the global state, which
        the training loop seeds.
    """

    def __init__(
        self,
        in_channels: int,
        frames: int,
        encoder_channels: Sequence[int],
        classes: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if len(encoder_channels) < 2:
            raise ValueError(f"encoder_channels needs at least 2 levels, got {encoder_channels}")
        self.in_channels = int(in_channels)
        self.frames = int(frames)
        self.encoder_channels = tuple(int(c) for c in encoder_channels)
        self.classes = int(classes)
        if seed is None:
            self._build()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._build()

    @property
    def multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2 ** (len(self.encoder_channels) - 1)

    def _build(self) -> None:
        chans = self.encoder_channels
        inputs = (self.in_channels, *chans[:-1])
        self.cells = nn.ModuleList(ConvLSTMCell(i, o) for i, o in zip(inputs, chans, strict=True))
        self.encoders = nn.ModuleList(_double_conv(c, c) for c in chans)
        self.pool = nn.MaxPool2d(2)
        # decoder, deepest first: upsample level l + 1 to level l, concat its skip
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2)
            for k in reversed(range(len(chans) - 1))
        )
        self.decoders = nn.ModuleList(
            _double_conv(2 * chans[k], chans[k]) for k in reversed(range(len(chans) - 1))
        )
        self.head = nn.Conv2d(chans[0], self.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, tc, h, w = x.shape
        t, c = self.frames, self.in_channels
        if tc != t * c:
            raise ValueError(
                f"the network reads {t} frames x {c} channels = {t * c} input channels, "
                f"got {tc}: check the frames and in_channels options"
            )
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"input {h}x{w} px: height and width must be multiples of {self.multiple} "
                f"for {len(self.encoder_channels)} encoder levels (pad the image)"
            )
        steps = x.reshape(b, t, c, h, w)
        skips = []
        last = len(self.cells) - 1
        for level, (cell, convs) in enumerate(zip(self.cells, self.encoders, strict=True)):
            if level > 0:
                steps = self.pool(steps.flatten(0, 1)).unflatten(0, (b, t))
            hidden = cell.run(steps)
            if level == last:  # the bottleneck: only its last step reaches the decoder
                y = convs(hidden[:, -1])
                break
            steps = convs(hidden.flatten(0, 1)).unflatten(0, (b, t))
            skips.append(steps[:, -1])
        for up, convs, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            y = convs(torch.cat([up(y), skip], dim=1))
        return self.head(y)


class LSTMUNet(UNet):
    """``lstm_unet``: the ``unet`` family's classes, loss and watershed on a ConvLSTM U-Net."""

    family = "lstm_unet"
    needs_time = True

    def build_network(self, *, load_weights: bool = True) -> ConvLSTMUNet:
        """``(B, frames * in_channels, H, W) -> (B, 3, H, W)``, initialised from the global seed.

        ``load_weights`` is accepted for the interface; there are no pretrained weights.
        """
        return ConvLSTMUNet(
            self.in_channels,
            self.frames,
            encoder_channels=self.options.encoder_channels,
            classes=3,
        )
