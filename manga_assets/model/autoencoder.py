"""ConvLSTM autoencoders of emission-line map cubes: plain (2DConvLSTM-AE) and variational (-vAE).

A galaxy is a sequence of T = 19 line maps (H x W) in wavelength order, read like a video. Shapes
use B (batch), T (lines), C (channels), H, W (map size), D (latent size), and for the default
configuration (grid 32, ``encoder_channels=(16, 32)``)::

    x (B, T, H, W) and its validity -> (B, T, 2, 32, 32)
    encoder stage 1: per-map conv, stride 2 -> (B, T, 16, 16, 16) -> ConvLSTM(16 -> 16)
    encoder stage 2: per-map conv, stride 2 -> (B, T, 32, 8, 8)   -> ConvLSTM(32 -> 32)
    last hidden state (B, 32, 8, 8) -> flatten -> linear -> latent (B, D)  [vae: mean, log-var]
    latent -> linear -> the decoder's initial (h, c) at 8x8, and its per-line input
             (one map from the latent plus a learned embedding of the line)
    decoder stage 2: ConvLSTM(32 -> 32) at 8x8; per-map conv (32 -> 4*16) + pixel shuffle
                     -> (B, T, 16, 16, 16)
    decoder stage 1: ConvLSTM(16 -> 16) at 16x16; per-map conv (16 -> 4*1) + pixel shuffle
                     -> (B, T, 1, 32, 32) -> the reconstruction (B, T, 32, 32)

Per-map convolutions fold T into the batch (one call for all B*T maps); the ConvLSTMs carry the
information along the wavelength axis. The encoder downsamples before each ConvLSTM because the
recurrent convolutions dominate the cost: running them at 16x16 and 8x8 instead of 32x32 cuts the
FLOPs by 4-16x.

The encoder sees, per line map, the asinh-stretched flux and a validity channel (1 where the pixel
is usable), so "no data" and "zero flux" are different inputs. The decoder draws stretched maps;
they go back to linear units before the loss.

Fit is measured by a chi-square in units of the noise (`chi_square_terms`): in the galaxy's
normalised linear units x = f / s (s the galaxy's scale) a pixel has weight w = IVAR s^2, softened
by a systematic floor, 1 / w_eff = 1 / w + (eps x_hat)^2, for the template and calibration errors
that IVAR does not hold (Belfiore et al. 2019; eps = 5 %). A model that reproduces every galaxy to
the noise scores about 1 per valid pixel; the mean map scores far more. This fixed yardstick is
what early stopping and the quality gate read.

The weights minimise each galaxy's chi-square per valid pixel x on that yardstick, through
``c log(1 + x / c)`` (`GALAXY_LOSS_SCALE`): a galaxy fitted near its noise counts fully, one fitted
at many times its noise counts by its relative improvement, so a few bright or odd galaxies cannot
decide what the model learns. The VAE adds 2 beta KL per galaxy (the negative ELBO, 0.5 chi2 +
beta KL, scaled by 2) inside the same per-galaxy term.

Beside the weights the model learns its own uncertainty: per line, eps_l = 5 % + a learned term
(`line_floor`), for what a 32-number code cannot encode: HII regions at the PSF scale in a bright
disk are real, but no autoencoder redraws each one, and at S/N 100 a 20 % miss is 400 chi-square
a pixel. It is the maximum-likelihood floor of the residuals the weights leave (a Gaussian
likelihood whose log-determinant keeps it honest, on the reconstruction without gradient), so it
never makes the weights fit less; the anomaly scores count residuals against it.

Like nanoGPT's ``GPT.forward(idx, targets)``, `ConvLSTMAutoencoder.forward` returns the output and
its losses in one call, so training, validation and inference share one code path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model import defaults
from manga_assets.model.convlstm import ConvLSTM
from manga_assets.model.normalise import Normalisation, denormalise

Tensor = torch.Tensor

VARIANTS = ("ae", "vae")
# Channels per line map seen by the encoder: the stretched flux and its validity.
INPUT_CHANNELS = 2
# Systematic error floor, as a fraction of the model's flux (see `chi_square_terms`): DAP line
# fluxes carry template systematics of a few per cent that IVAR leaves out.
DEFAULT_SYSTEMATIC_FLOOR = 0.05
# The learned part of each line's systematic floor starts here (added to the 5 %).
INITIAL_LEARNED_FLOOR = 0.01
# Per galaxy, the negative log-likelihood per pixel x enters the loss as c log(1 + x / c): a
# galaxy at c times its noise keeps half its weight, one at 100 c about a hundredth.
GALAXY_LOSS_SCALE = 10.0
# Decoder outputs are clipped here (stretched units) before going back to linear flux: asinh^-1
# grows exponentially, and an untrained decoder must not overflow the loss.
STRETCHED_OUTPUT_LIMIT = 6.0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and input conventions of a ConvLSTM autoencoder (nothing about training).

    Parameters
    ----------
    variant : {"ae", "vae"}
        Plain autoencoder or variational autoencoder.
    n_lines : int
        Maps per galaxy, T (default 19).
    grid : int
        Side of each map in pixels (default 32); divisible by ``2 ** len(encoder_channels)``.
    line_names : tuple of str
        The T line names in wavelength order; inference refuses cubes with other lines.
    encoder_channels : tuple of int
        Channels of each encoder stage; each stage halves the map size (default (16, 32)).
    kernel_size : int
        Odd kernel size of every convolution but the ConvLSTMs' input convolutions (default 3).
    input_kernel_size : int
        Odd kernel size of the input convolution of the encoder's ConvLSTMs and of the decoder's
        last (default 3). 1 costs 0.59x the FLOPs and trains 1.2-1.37x faster on the CPU with the
        synthetic benchmark's figures unchanged, but fitted the real 7815-3702's [OIII] 2-4x
        worse in two seeds (benchmarks/RESULTS.md), so it is not the default. The decoder's first
        ConvLSTM reads the latent map, whose convolution is computed once per galaxy, and keeps
        ``kernel_size``. Configurations saved without this field had 3 (``kernel_size``).
    latent_dim : int
        Size D of the latent vector (default 32).
    beta : float
        Weight of the KL term of the VAE loss, ``0.5 chi2 + beta KL`` per galaxy (default 1: the
        ELBO of the Gaussian likelihood that the noise defines); ignored by the AE.
    systematic_floor : float
        eps of the chi-square's systematic floor, ``1 / w_eff = 1 / w + (eps x_hat)^2``
        (default 0.05: 5 per cent of the model flux).
    norm_reference_line, norm_percentile, norm_softening, norm_min_reference_pixels
        The input normalisation (see `manga_assets.model.normalise.Normalisation`).
    """

    variant: str = "ae"
    n_lines: int = 19
    grid: int = 32
    line_names: tuple[str, ...] = PROJECT_LINES
    encoder_channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    input_kernel_size: int = 3
    latent_dim: int = defaults.LATENT_DIM
    beta: float = defaults.BETA
    systematic_floor: float = DEFAULT_SYSTEMATIC_FLOOR
    norm_reference_line: str = "Ha-6564"
    norm_percentile: float = 99.0
    norm_softening: float = 0.2
    norm_min_reference_pixels: int = 5

    def __post_init__(self) -> None:
        # Coerce lists (from JSON) to tuples so that configs compare and hash by value.
        object.__setattr__(self, "line_names", tuple(self.line_names))
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if len(self.line_names) != self.n_lines:
            raise ValueError(
                f"n_lines={self.n_lines} but {len(self.line_names)} line names were given"
            )
        if not self.encoder_channels or min(self.encoder_channels) < 1:
            raise ValueError(
                f"encoder_channels needs at least one positive size, got {self.encoder_channels}"
            )
        factor = 2 ** len(self.encoder_channels)
        if self.grid < factor or self.grid % factor:
            raise ValueError(
                f"grid={self.grid} must be a multiple of {factor}: each of the "
                f"{len(self.encoder_channels)} encoder stages halves the map size"
            )
        for name in ("kernel_size", "input_kernel_size"):
            size = getattr(self, name)
            if size < 1 or size % 2 == 0:
                raise ValueError(f"{name} must be a positive odd integer, got {size}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}")
        if self.beta < 0:
            raise ValueError(f"beta must not be negative, got {self.beta}")
        if self.systematic_floor < 0:
            raise ValueError(f"systematic_floor must not be negative, got {self.systematic_floor}")
        self.normalisation  # validates the normalisation fields  # noqa: B018

    @property
    def normalisation(self) -> Normalisation:
        """The input normalisation these fields describe."""
        return Normalisation(
            reference_line=self.norm_reference_line,
            percentile=self.norm_percentile,
            softening=self.norm_softening,
            min_reference_pixels=self.norm_min_reference_pixels,
        )

    @property
    def kl_weight(self) -> float:
        """Weight of the per-galaxy KL (nats) against 0.5 chi2 in the loss; 0 for the AE."""
        return self.beta if self.variant == "vae" else 0.0

    @property
    def bottleneck_grid(self) -> int:
        """Map side after the encoder's downsampling."""
        return self.grid // 2 ** len(self.encoder_channels)

    def to_dict(self) -> dict:
        """JSON-safe fields (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Inverse of `to_dict`.

        Raises
        ------
        ValueError
            If ``values`` holds a key that is not a field (e.g. a config from another version).
        """
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig fields {unknown}; known fields are {sorted(known)}"
            )
        if "input_kernel_size" not in values:  # saved before the field existed
            values = {**values, "input_kernel_size": values.get("kernel_size", cls.kernel_size)}
        return cls(**values)


def to_linear(stretched: Tensor, normalisation: Normalisation) -> Tensor:
    """Stretched maps back to the galaxy's normalised linear flux x = f / s."""
    return denormalise(stretched, 1.0, normalisation)


def chi_square_terms(
    model_flux: Tensor,
    flux: Tensor,
    weight: Tensor,
    valid: Tensor,
    systematic_floor: float | Tensor = DEFAULT_SYSTEMATIC_FLOOR,
) -> Tensor:
    """Per-pixel chi-square of a model in units of the noise, 0 where invalid.

    Parameters
    ----------
    model_flux, flux : Tensor, (B, T, H, W)
        Model and data in the galaxy's normalised linear units x = f / s.
    weight : Tensor, (B, T, H, W)
        Inverse variance of ``flux`` in those units, w = IVAR s^2.
    valid : Tensor of bool, (B, T, H, W)
    systematic_floor : float or Tensor
        eps: the variance gains (eps x_hat)^2; per line as a (T, 1, 1) tensor. x_hat enters
        without gradient, so a model cannot lower its chi-square by inflating its own flux.

    Returns
    -------
    Tensor, (B, T, H, W)
        ``w_eff (x_hat - x)^2`` with ``w_eff = w / (1 + w (eps x_hat)^2)``.
    """
    terms = effective_weight(model_flux, weight, systematic_floor) * (model_flux - flux) ** 2
    return torch.where(valid, terms, torch.zeros_like(terms))


def effective_weight(
    model_flux: Tensor, weight: Tensor, systematic_floor: float | Tensor = DEFAULT_SYSTEMATIC_FLOOR
) -> Tensor:
    """``w_eff = w / (1 + w (eps x_hat)^2)``: the noise's weight with the systematic floor added."""
    floor = (systematic_floor * model_flux.detach()) ** 2
    return weight / (1.0 + weight * floor)


def robust_galaxy_loss(per_galaxy: Tensor, scale: float = GALAXY_LOSS_SCALE) -> Tensor:
    """Mean over galaxies of ``c log(1 + x / c)``: each galaxy's weight in the gradient is
    ``1 / (1 + x / c)``, so no galaxy's loss grows faster than the log of its misfit."""
    return (scale * torch.log1p(per_galaxy.clamp_min(0.0) / scale)).mean()


def per_line_chi_square(terms: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Chi-square sums and valid-pixel counts per galaxy and line, both (B, T)."""
    return terms.sum(dim=(-2, -1)), valid.sum(dim=(-2, -1))


def gaussian_kl(mean: Tensor, log_variance: Tensor) -> Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, 1)) per galaxy, summed over latent dimensions.

    Parameters
    ----------
    mean, log_variance : Tensor, (B, D)

    Returns
    -------
    Tensor, (B,)
    """
    return 0.5 * (mean**2 + log_variance.exp() - 1.0 - log_variance).sum(dim=1)


def _init_weights(module: nn.Module) -> None:
    """Variance-preserving initialisation (He et al. 2015).

    With torch's default (uniform, a third of the variance of He's), the difference between two
    galaxies shrank by about 100x through the encoder and another 100x through the decoder, and
    training sat on the mean-map plateau for hundreds of steps before the latent carried anything.
    """
    if isinstance(module, ConvLSTM):
        module.reset_parameters()  # unit gain: its gates are close to linear at first
    elif isinstance(module, nn.Conv2d | nn.Linear):
        # nn.Module.apply visits children first, so a ConvLSTM's own convs are set here and then
        # overwritten by the branch above.
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ConvLSTMAutoencoder(nn.Module):
    """The 2DConvLSTM-AE / -vAE (see the module notes for the layer plan).

    Parameters
    ----------
    config : ModelConfig
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.encoder_channels
        kernel = config.kernel_size
        padding = kernel // 2
        bottleneck_channels = channels[-1]
        bottleneck_pixels = config.bottleneck_grid**2
        flat_size = bottleneck_channels * bottleneck_pixels

        # Encoder: stage k = per-map strided conv (C_{k-1} -> C_k, size / 2) + ConvLSTM(C_k -> C_k).
        in_channels = (INPUT_CHANNELS,) + channels[:-1]
        self.encoder_downsample = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel, stride=2, padding=padding)
            for c_in, c_out in zip(in_channels, channels, strict=True)
        )
        self.encoder_lstm = nn.ModuleList(
            ConvLSTM(c, c, kernel, config.input_kernel_size) for c in channels
        )
        latent_outputs = 2 * config.latent_dim if config.variant == "vae" else config.latent_dim
        self.to_latent = nn.Linear(flat_size, latent_outputs)

        # Decoder: the latent sets the initial state and the per-line input of the deepest
        # ConvLSTM; stage k = ConvLSTM(C_k -> C_k) + per-map upsampling x2 to C_{k-1} channels.
        self.latent_to_state = nn.Linear(config.latent_dim, 2 * flat_size)
        self.latent_to_input = nn.Linear(config.latent_dim, flat_size)
        # Which line is being drawn: the decoder would otherwise have to count steps.
        self.line_embedding = nn.Parameter(torch.zeros(config.n_lines, bottleneck_channels, 1, 1))
        decoder_channels = tuple(reversed(channels))  # e.g. (32, 16)
        input_kernels = (kernel,) + (config.input_kernel_size,) * (len(decoder_channels) - 1)
        self.decoder_lstm = nn.ModuleList(
            ConvLSTM(c, c, kernel, input_kernel)
            for c, input_kernel in zip(decoder_channels, input_kernels, strict=True)
        )
        # Upsampling by sub-pixel convolution (Shi et al. 2016): a conv at the low resolution makes
        # 4x the channels, pixel_shuffle rearranges them into a map twice as large. Nearest
        # upsampling then a conv at the high resolution costs the same FLOPs but was 2x slower on
        # CPU (the upsampled copy, and thin convolutions at full resolution).
        out_channels = decoder_channels[1:] + (1,)  # the last stage draws the maps themselves
        self.decoder_upsample = nn.ModuleList(
            nn.Conv2d(c_in, 4 * c_out, kernel, padding=padding)
            for c_in, c_out in zip(decoder_channels, out_channels, strict=True)
        )
        # The decoder draws the difference from a per-line mean map. Training initialises it to
        # the mean training map (`set_mean_maps`), so the model starts at the mean-map baseline
        # and its capacity goes into what distinguishes galaxies; from zeros, the first hundreds
        # of steps were spent learning the average galaxy.
        self.mean_maps = nn.Parameter(torch.zeros(config.n_lines, config.grid, config.grid))
        # A linear path from the latent to every pixel, beside the recurrent one: the decoder can
        # then draw at least what a principal-component basis draws (the quality gate compares
        # the model with a weighted PCA of as many components), and the ConvLSTM adds what is
        # not linear. Zero at first, like the residual it carries.
        self.latent_to_maps = nn.Linear(config.latent_dim, config.n_lines * config.grid**2)
        self.apply(_init_weights)
        nn.init.zeros_(self.latent_to_maps.weight)
        nn.init.zeros_(self.latent_to_maps.bias)
        # Log of each line's learned systematic floor (see `line_floor`).
        self.log_learned_floor = nn.Parameter(
            torch.full((config.n_lines,), math.log(INITIAL_LEARNED_FLOOR))
        )
        if config.variant == "vae":
            # Start with posterior noise (std e^-3 = 0.05) well below the spread of the means:
            # at unit variance the noise swamped the code and the decoder learnt to ignore it.
            with torch.no_grad():
                self.to_latent.bias[config.latent_dim :].fill_(-6.0)

    def get_num_params(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _encode_distribution(
        self, x: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Latent mean (B, D) and, for the VAE, log-variance (B, D) of normalised cubes x."""
        config = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (config.n_lines, config.grid, config.grid):
            raise ValueError(
                f"expected normalised cubes of shape (batch, {config.n_lines}, {config.grid}, "
                f"{config.grid}), got {tuple(x.shape)}"
            )
        batch, steps = x.shape[:2]
        if valid is None:
            valid = torch.ones_like(x, dtype=torch.bool)
        validity = valid.to(x.dtype)
        sequence = torch.stack((x * validity, validity), dim=2)  # (B, T, 2, H, W)
        for downsample, lstm in zip(self.encoder_downsample, self.encoder_lstm, strict=True):
            frames = sequence.flatten(0, 1)  # (B*T, C_in, H, W)
            frames = F.silu(downsample(frames))  # (B*T, C, H/2, W/2)
            sequence = frames.unflatten(0, (batch, steps))  # (B, T, C, H/2, W/2)
            sequence, (hidden, _) = lstm(sequence)
        statistics = self.to_latent(hidden.flatten(1))  # (B, D) or (B, 2D)
        if config.variant == "ae":
            return statistics, None
        mean, log_variance = statistics.chunk(2, dim=1)
        # Bounded so that exp() can neither overflow nor collapse the noise to nothing.
        return mean, log_variance.clamp(-12.0, 8.0)

    def encode(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Latent vectors of normalised cubes: the code (AE) or the posterior mean (VAE).

        Parameters
        ----------
        x : Tensor, (B, T, H, W)
        valid : Tensor of bool, (B, T, H, W), optional
            Usable pixels (all when not given); the encoder ignores the others.

        Returns
        -------
        Tensor, (B, D)
        """
        mean, _ = self._encode_distribution(x, valid)
        return mean

    def encode_distribution(
        self, x: Tensor, valid: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Latent mean and (VAE) log-variance, each (B, D); the AE's log-variance is None."""
        return self._encode_distribution(x, valid)

    def decode(self, latent: Tensor) -> Tensor:
        """Rebuild normalised cubes from latent vectors.

        Parameters
        ----------
        latent : Tensor, (B, D)

        Returns
        -------
        Tensor, (B, T, H, W)
        """
        config = self.config
        batch = latent.shape[0]
        steps = config.n_lines
        side = config.bottleneck_grid
        channels = config.encoder_channels[-1]
        state = self.latent_to_state(latent).view(batch, 2 * channels, side, side)
        hidden, cell = state.chunk(2, dim=1)  # (B, C, s, s) each
        hidden = torch.tanh(hidden)  # a hidden state is an LSTM output, within (-1, 1)
        drive = self.latent_to_input(latent).view(batch, channels, side, side)
        last = len(self.decoder_lstm) - 1
        for index, (lstm, upsample) in enumerate(
            zip(self.decoder_lstm, self.decoder_upsample, strict=True)
        ):
            if index == 0:
                input_gates = self._first_decoder_input_gates(lstm, drive)
                sequence, _ = lstm.forward_gates(input_gates, (hidden, cell))
            else:
                sequence, _ = lstm(sequence)
            frames = upsample(sequence.flatten(0, 1))  # (B*T, 4*C_next, s, s)
            frames = F.pixel_shuffle(frames, 2)  # (B*T, C_next, 2s, 2s)
            if index < last:
                frames = F.silu(frames)
            sequence = frames.unflatten(0, (batch, steps))  # (B, T, C_next, 2s, 2s)
        maps = sequence.view(batch, steps, config.grid, config.grid)  # C_next = 1 at the end
        linear = self.latent_to_maps(latent).view(batch, steps, config.grid, config.grid)
        return maps + linear + self.mean_maps  # (B, T, H, W)

    def _first_decoder_input_gates(self, lstm: ConvLSTM, drive: Tensor) -> list[Tensor]:
        """The first decoder ConvLSTM's input gates at every step, for the input ``drive + e_t``
        (the latent's map plus line t's embedding): by linearity of the convolution, the two
        convolutions once each instead of T convolutions of the sum."""
        conv = lstm.input_conv
        drive_gates = conv(drive)  # (B, 4C, s, s), with the bias
        side = drive.shape[-1]
        embeddings = self.line_embedding.expand(-1, -1, side, side)  # (T, C, s, s)
        line_gates = F.conv2d(embeddings, conv.weight, None, padding=conv.padding)  # (T, 4C, s, s)
        return [drive_gates + line_gate for line_gate in line_gates.unbind(0)]

    @torch.no_grad()
    def set_mean_maps(self, mean_maps: Tensor) -> None:
        """Set the per-line mean maps (T, H, W) the decoder's output is added to."""
        self.mean_maps.copy_(torch.as_tensor(mean_maps, dtype=self.mean_maps.dtype))

    def forward(
        self,
        x: Tensor,
        valid: Tensor | None = None,
        weight: Tensor | None = None,
        input_valid: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Reconstruct normalised cubes and compute the losses.

        Parameters
        ----------
        x : Tensor, (B, T, H, W)
            Normalised (stretched) cubes, invalid pixels 0 (see `manga_assets.model.normalise`).
        valid : Tensor of bool, (B, T, H, W), optional
            Pixels the loss counts; all of them if not given.
        weight : Tensor, (B, T, H, W), optional
            Inverse variance in normalised linear units, IVAR s^2; 1 everywhere if not given.
        input_valid : Tensor of bool, (B, T, H, W), optional
            Pixels the encoder may see (default ``valid``). Training hides some valid pixels
            here, so the model learns to fill gaps instead of copying its input.

        Returns
        -------
        reconstruction : Tensor, (B, T, H, W)
            In stretched units, like ``x``.
        losses : dict of str to Tensor, each ()
            ``chi2``: chi-square per valid pixel with the fixed floor (`chi_square_terms`);
            ``kl``: for the VAE, the KL divergence of the posterior from N(0, I) in nats,
            averaged over the galaxies, 0 for the AE; ``total``: what training minimises, per
            galaxy the chi-square plus 2 beta KL per valid pixel through `robust_galaxy_loss`,
            plus the learned floor's negative log-likelihood (its only gradient).

        Notes
        -----
        In training mode the VAE decodes a sample of its posterior (reparameterisation trick); in
        evaluation mode it decodes the posterior mean, so validation and inference are
        deterministic.
        """
        if valid is None:
            valid = torch.ones_like(x, dtype=torch.bool)
        if weight is None:
            weight = torch.ones_like(x)
        mean, log_variance = self._encode_distribution(
            x, valid if input_valid is None else input_valid
        )
        if log_variance is None:
            latent = mean
            kl_per_galaxy = x.new_zeros(x.shape[0])
        else:
            if self.training:
                latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
            else:
                latent = mean
            kl_per_galaxy = gaussian_kl(mean, log_variance)
        reconstruction = self.decode(latent)
        terms = self.chi_square_terms(reconstruction, x, weight, valid)
        n_valid = valid.sum().clamp_min(1)
        per_galaxy_pixels = valid.sum(dim=(1, 2, 3)).clamp_min(1)
        misfit = terms.sum(dim=(1, 2, 3)) + 2.0 * self.config.kl_weight * kl_per_galaxy
        # The floor learns from the residuals the weights leave, not the other way round.
        floor_terms = self.likelihood_terms(reconstruction.detach(), x, weight, valid)
        floor_loss = (floor_terms.sum(dim=(1, 2, 3)) / per_galaxy_pixels).mean()
        return reconstruction, {
            "chi2": terms.sum() / n_valid,
            "kl": kl_per_galaxy.mean(),
            "total": robust_galaxy_loss(misfit / per_galaxy_pixels) + floor_loss,
        }

    def chi_square_terms(
        self, reconstruction: Tensor, x: Tensor, weight: Tensor, valid: Tensor
    ) -> Tensor:
        """Per-pixel chi-square (B, T, H, W) of stretched reconstructions of stretched cubes,
        with the fixed 5 % floor: the yardstick of early stopping and the quality gate."""
        flux = to_linear(x.float(), self.config.normalisation)
        floor = self.config.systematic_floor
        return chi_square_terms(self.model_flux(reconstruction), flux, weight.float(), valid, floor)

    def line_floor(self) -> Tensor:
        """Per line, the model's fractional uncertainty eps_l (T, 1, 1): the fixed floor plus the
        learned share of each line's flux that the model cannot encode."""
        learned = self.log_learned_floor.float().exp()
        return (self.config.systematic_floor + learned).view(-1, 1, 1)

    def line_floors(self) -> dict[str, float]:
        """`line_floor` by line name, for metrics and metadata."""
        values = self.line_floor().detach().flatten().tolist()
        return dict(zip(self.config.line_names, (round(v, 4) for v in values), strict=True))

    def uncertain_chi_square_terms(
        self, reconstruction: Tensor, x: Tensor, weight: Tensor, valid: Tensor
    ) -> Tensor:
        """Per-pixel chi-square with the model's own uncertainty (`line_floor`): residuals the
        model admits it cannot draw are not counted against a galaxy (the anomaly scores)."""
        flux = to_linear(x.float(), self.config.normalisation)
        model_flux = self.model_flux(reconstruction)
        return chi_square_terms(model_flux, flux, weight.float(), valid, self.line_floor())

    def likelihood_terms(
        self, reconstruction: Tensor, x: Tensor, weight: Tensor, valid: Tensor
    ) -> Tensor:
        """Per-pixel Gaussian negative log-likelihood (times 2, less the constant log w) with
        the model's uncertainty: ``w_eff r^2 + log(w / w_eff)``, 0 where invalid."""
        flux = to_linear(x.float(), self.config.normalisation)
        model_flux = self.model_flux(reconstruction)
        weight = weight.float()
        w_eff = effective_weight(model_flux, weight, self.line_floor())
        log_determinant = torch.log1p(weight * (self.line_floor() * model_flux.detach()) ** 2)
        terms = w_eff * (model_flux - flux) ** 2 + log_determinant
        return torch.where(valid, terms, torch.zeros_like(terms))

    def model_flux(self, reconstruction: Tensor) -> Tensor:
        """A stretched reconstruction in the galaxy's normalised linear units x = f / s."""
        limit = STRETCHED_OUTPUT_LIMIT
        return to_linear(reconstruction.float().clamp(-limit, limit), self.config.normalisation)
