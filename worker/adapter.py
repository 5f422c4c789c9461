"""Image prompts through an IP-Adapter (`IMAGINE_IMAGE_IP_ADAPTER`): the images steer the model through their CLIP
image embeddings, added to every cross-attention layer, instead of being the starting image.

    adapter = Adapter.of(pipe)                 # after `model.loading.load_ip_adapter(source, pipe)`; None without
    prompt = adapter.image_prompt(pictures, weights, scale)
    pipe(..., **adapter.call_kwargs(prompt, guidance_scale))   # every call: None for a text-only one

Several images (a `/blend`, or `url1 url2 text`) are blended as the weighted mean of their embeddings (`url::2`
weighs one image twice), which is how IP-Adapter mixes images. Once an adapter is in the UNet, diffusers requires
image embeddings in every call of every pipeline sharing that UNet (variations, Zoom Out, batches...): a call without
an image prompt passes `nothing`, embeddings at scale 0, which diffusers' attention processors skip, so such a call
renders exactly what it would without the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.models.embeddings import ImageProjection
from PIL import Image

from core.errors import GenerationFailed


@dataclass(frozen=True)
class ImagePrompt:
    """The images of one job as the adapter sees them: embeddings of batch 1, and how strongly they steer."""

    positive: torch.Tensor
    negative: torch.Tensor  # what classifier-free guidance pushes away from: the embedding of no image
    scale: float


class Adapter:
    """The IP-Adapter loaded in a pipeline's UNet, and the image encoder that feeds it."""

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self.pipe = pipe
        projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        # IP-Adapter and its Face ID variant read the pooled image embedding; Plus and Full Face read hidden states
        self.hidden_states = not isinstance(projection, ImageProjection)
        black = Image.new("RGB", (pipe.image_encoder.config.image_size,) * 2)
        _, negative = self._encode(black)
        self.nothing = ImagePrompt(negative, negative, 0.0)

    @classmethod
    def of(cls, pipe: DiffusionPipeline) -> Adapter | None:
        """The adapter of `pipe`, or None when no IP-Adapter was loaded into it."""
        unet = getattr(pipe, "unet", None)
        if unet is None or getattr(unet.config, "encoder_hid_dim_type", None) != "ip_image_proj":
            return None
        if getattr(pipe, "image_encoder", None) is None:
            raise GenerationFailed("the IP-Adapter was loaded without its image encoder (IMAGINE_IMAGE_IP_ADAPTER)")
        return cls(pipe)

    def image_prompt(self, pictures: Sequence[Image.Image], weights: Sequence[float], scale: float) -> ImagePrompt:
        """The weighted mean of the pictures' embeddings (weights w_i / sum(w)), to steer with at `scale`."""
        total = sum(weights)
        if not pictures or abs(total) < 1e-6:
            raise GenerationFailed("the weights of the image prompts must not add up to 0")
        positive: torch.Tensor | float = 0.0
        negative = self.nothing.negative
        for picture, weight in zip(pictures, weights, strict=True):
            embeds, negative = self._encode(picture.convert("RGB"))
            positive = positive + (weight / total) * embeds
        assert isinstance(positive, torch.Tensor)
        return ImagePrompt(positive, negative, scale)

    def call_kwargs(self, prompt: ImagePrompt | None, guidance_scale: float) -> dict[str, Any]:
        """The pipeline arguments of one call: `prompt`'s embeddings at its scale, or `nothing` at scale 0.

        The scale is set on the UNet's attention processors, shared by every pipeline of this UNet: a worker makes
        one call at a time."""
        chosen = prompt or self.nothing
        self.pipe.set_ip_adapter_scale(chosen.scale)
        guided = guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None
        pair = torch.cat([chosen.negative, chosen.positive]) if guided else chosen.positive
        return {"ip_adapter_image_embeds": [pair]}

    def _encode(self, picture: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, embedding of no image) of one picture, each shaped as diffusers takes them for one image."""
        with torch.inference_mode():
            embeds, negative = self.pipe.encode_image(picture, self.pipe.device, 1, self.hidden_states)
        return embeds[None], negative[None]
