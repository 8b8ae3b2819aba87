"""Latent pipelines: the VAE (``AutoencoderKL``) that takes a latent diffusion model's samples to images.

A latent pipeline (Rombach et al., 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models"; Stable Diffusion) diffuses the latents ``z = s · (E(image) - shift)`` of its VAE,
with the scaling factor ``s`` (``scaling_factor``, 0.18215 for SD 1.5) and shift
(``shift_factor``, none for SD 1.5) of the VAE's config. rrrdsl samples in that latent space
(the samplers' ``D`` is the UNet's ``C·H·W``) and decodes the samples once at the end:
``image = D(z / s + shift)``, mapped from the VAE's ``[-1, 1]`` to ``[0, 1]`` as diffusers'
image processor does. The decoder reads its weights at the first decode, so that ``rrr check``
reads none; it decodes ``max_batch`` samples per forward when given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ...errors import CheckpointError
from ...models.base import Decoder

#: the VAE classes a pipeline's ``vae`` entry may name
AUTOENCODERS = ("AutoencoderKL",)


class VaeDecoder(Decoder):
    """The decoder of a latent pipeline's VAE.

    Parameters
    ----------
    load
        Returns the ``AutoencoderKL`` (called at the first decode).
    folder
        The pipeline folder (two decoders of one folder are equal).
    latent_shape, shape
        The latent shape ``(C, h, w)`` and the image shape ``(C', H, W)``.
    scaling_factor, shift_factor
        From the VAE's config.
    max_batch
        The most samples per forward (None: all in one).
    """

    def __init__(
        self,
        load: Callable[[], nn.Module],
        folder: Path,
        latent_shape: Sequence[int],
        shape: Sequence[int],
        scaling_factor: float,
        shift_factor: float = 0.0,
        max_batch: Optional[int] = None,
    ) -> None:
        self._load = load
        self._vae: Optional[nn.Module] = None
        self.folder = Path(folder).resolve()
        self.latent_shape = tuple(latent_shape)
        self.shape = tuple(shape)  # type: ignore[assignment]
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.max_batch = max_batch
        #: forwards of the VAE's decoder so far (tests count them)
        self.forwards = 0

    @property
    def vae(self) -> nn.Module:
        """The VAE, loaded on first use."""
        if self._vae is None:
            self._vae = self._load()
        return self._vae

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        weight = next(self.vae.parameters())
        images = []
        for chunk in z.split(self.max_batch or max(1, z.shape[0])):
            latents = chunk.reshape(-1, *self.latent_shape).to(weight) / self.scaling_factor + self.shift_factor
            with torch.no_grad():
                image = self.vae.decode(latents).sample  # type: ignore[operator]
            self.forwards += 1
            images.append((image.float().cpu() / 2 + 0.5).clamp(0, 1))
        return torch.cat(images) if images else torch.empty(0, *self.shape)

    def _key(self) -> tuple:
        return (self.folder, self.latent_shape, self.shape, self.scaling_factor, self.shift_factor)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VaeDecoder) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def vae_decoder(load: Callable[[], nn.Module], folder: Path, config: dict[str, Any], latent_shape: Sequence[int], max_batch: Optional[int]) -> VaeDecoder:
    """The decoder of the VAE with ``config`` (its ``config.json``) for latents of ``latent_shape``
    ``(C, h, w)`` (the UNet's), checked without reading weights: the VAE's ``latent_channels``
    must be the UNet's channels; each of its downsampling blocks halves the side, so the image
    is ``2^(blocks - 1)`` times the latent's side."""
    where = folder / "vae" / "config.json"
    channels, blocks = config.get("latent_channels"), config.get("block_out_channels")
    if channels != latent_shape[0]:
        raise CheckpointError(f"{where}: latent_channels is {channels!r}, but the UNet takes {latent_shape[0]} channels")
    if not (isinstance(blocks, list) and blocks) or not isinstance(config.get("out_channels"), int):
        raise CheckpointError(f"{where}: block_out_channels and out_channels must give the image shape")
    factor = 2 ** (len(blocks) - 1)
    shape = (config["out_channels"], latent_shape[1] * factor, latent_shape[2] * factor)
    scaling, shift = config.get("scaling_factor", 0.18215), config.get("shift_factor") or 0.0
    if not isinstance(scaling, (int, float)) or isinstance(scaling, bool) or not scaling > 0 or not isinstance(shift, (int, float)):
        raise CheckpointError(f"{where}: scaling_factor must be a number > 0 and shift_factor a number, got {scaling!r} and {shift!r}")
    return VaeDecoder(load, folder, latent_shape, shape, scaling, shift, max_batch)
