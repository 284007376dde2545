"""Variational recurrent autoencoder (Fabius & van Amersfoort 2014): a VAE whose encoder and
decoder are recurrent networks (GRU or LSTM), for sequences.

How an input is read as a sequence: an image [B, C, H, W] is H time steps of C * W features, row
by row (step t is row t of every channel). Digits (8 steps of 8) and MNIST (28 of 28) work
unchanged; a sequence dataset stores T steps of F features as [N, 1, T, F], e.g. the waveforms
(``training/waveforms.py``) as [N, 1, T, 1]. ``decode`` gives the same layout back.

Encoder: an RNN reads the steps in reverse order and its last hidden state gives q(z|x) (mean,
logvar). Reading in reverse (Sutskever et al. 2014) puts the first steps, which the decoder writes
first, closest to the code; on the waveforms it learnt markedly faster than reading forwards.
Decoder: the initial state is tanh(W z + b), as in the paper, and the RNN reads z at every step
and emits that step's logits. The paper's decoder also reads a sequence value at each step; here
it reads only z, so ``decode(z)`` depends on z alone (no teacher forcing, nothing to feed back at
generation) and the whole sequence runs in one fused RNN call. Prior N(0, I) and the loss are the
VAE's (``LatentModel``). ``arch`` is unused; ``hidden_dim`` is the width of both RNNs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vaescope.contract import Description, Posterior
from vaescope.training.config import ConfigError, FamilyOptions, ModelConfig
from vaescope.training.models.base import LatentModel, register

CELLS = ("gru", "lstm")


def as_sequence(x: Tensor) -> Tensor:
    """Images [B, C, H, W] -> sequences [B, H, C * W] (row t of every channel is step t)."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, h, c * w)


def as_image(seq: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
    """Inverse of ``as_sequence``: [B, H, C * W] -> [B, C, H, W]."""
    c, h, w = image_shape
    return seq.reshape(seq.shape[0], h, c, w).permute(0, 2, 1, 3)


@dataclass
class VRAEOptions(FamilyOptions):
    # a GRU has fewer parameters than an LSTM and trained as well on digits rows and waveforms
    cell: str = field(default="gru", metadata={"help": "recurrent cell of the encoder and decoder: gru or lstm"})

    def check(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {CELLS}, got {self.cell!r}")


@register("vrae")
class VRAE(LatentModel):
    Options = VRAEOptions
    showcase_rank = 9

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c, h, w = config.image_shape
        self.steps, self.features = h, c * w
        d, hidden = config.latent_dim, config.hidden_dim
        lstm = self.options.cell == "lstm"
        self.encoder_rnn = (nn.LSTM if lstm else nn.GRU)(self.features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * d)  # -> (mean, logvar)
        self.init_state = nn.Linear(d, hidden)
        self.decoder_rnn = (nn.LSTM if lstm else nn.GRU)(d, hidden, batch_first=True)
        self.out = nn.Linear(hidden, self.features)

    def _words(self) -> tuple[str, str, str]:
        return (f"VRAE ({self.options.cell.upper()})",
                "A variational recurrent autoencoder: a recurrent network reads a sequence step by step into one "
                "code, and another writes the sequence back from it; codes from the prior give new sequences.", "")

    def describe(self) -> Description:
        details = (f"{self.options.cell.upper()}, {self.steps} steps of {self.features} features",
                   f"{self.config.likelihood} likelihood")
        return dataclasses.replace(super().describe(), details=details)

    def encode(self, x: Tensor, condition: Tensor | None = None) -> Posterior:
        """x [B, C, H, W] read as H steps, last to first -> q(z|x) with mean / logvar [B, D]."""
        _, state = self.encoder_rnn(as_sequence(x).flip(1))
        last = (state[0] if isinstance(state, tuple) else state)[-1]  # [B, hidden]
        mean, logvar = self.head(last).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(-12, 8))  # clamp keeps exp() finite under AMP

    def decode_logits(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """z [B, D] -> logits [B, C, H, W]: the decoder RNN starts from tanh(W z + b) and reads z at
        every step."""
        h0 = torch.tanh(self.init_state(z))[None]  # [1, B, hidden]
        state = (h0, torch.zeros_like(h0)) if self.options.cell == "lstm" else h0
        hidden, _ = self.decoder_rnn(z[:, None].expand(-1, self.steps, -1), state)  # [B, H, hidden]
        return as_image(self.out(hidden), self.config.image_shape)
