"""A job's input images (image prompts, `/blend`, `/describe`): fetched, checked, and made what the model starts from.

    prompt = images.image_prompt(ctx, job_id, spec)    # with an IP-Adapter; None for a text-only prompt
    # -> ctx.engine.render(spec, image_prompt=prompt, ...)
    start = images.starting_image(ctx, job_id, spec)   # without; None for a text-only prompt
    # -> ctx.engine.image_to_image(spec, start.image, start.strength, ...)

With an IP-Adapter (IMAGINE_IMAGE_IP_ADAPTER), the images are fetched and checked as below, and steer a text-to-image
render through their CLIP embeddings (`worker.adapter`: weighted by `url::w`, scaled by `--iw` through
`core.images.adapter_scale`). Without one, an image prompt is image-to-image: the images are fetched
(`worker.fetch`, every rule there), checked by the image safety check when the job's channel asks for one, cropped to
the job's aspect, and blended through the model's own VAE: the weighted mean of their latents (weights from
`url::w`), decoded once. The grid is then redrawn from that image at the strength `--iw` gives
(`core.images.image_strength`), under the member's text with what the images show put before it (`described`, by
the worker's describer: without it the model sees only the images' colours and layout through img2img).
A refused or flagged image fails the job permanently: it is refunded, not retried.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps

from core.errors import GenerationFailed, ImageRefused
from core.images import adapter_scale, image_strength, images_of
from core.safety import safety_of
from core.spec import JobSpec, PromptPart
from worker import output_check
from worker.adapter import ImagePrompt
from worker.context import Context
from worker.describe import Describer
from worker.fetch import fetch_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """The image a job with input images starts from, and the img2img strength to redraw it with."""

    image: Image.Image
    strength: float
    spec: JobSpec  # the job's spec with the images' description in its text (`described`)


def fetch_all(ctx: Context, job_id: str, spec: JobSpec, urls: Sequence[str]) -> list[Image.Image]:
    """Fetch `urls` under the worker's rules and run the input safety check on them.

    Raises:
        GenerationFailed: an image was refused (the message says which and why) or flagged (recorded in the
            moderation log); the job is failed without retry, so it is refunded.
    """
    pictures = []
    for number, url in enumerate(urls, start=1):
        try:
            pictures.append(fetch_image(url, ctx.image_rules))
        except ImageRefused as exc:
            which = f"image {number}" if len(urls) > 1 else "the image"
            raise GenerationFailed(f"{which} was refused: {exc}") from None
    check_inputs(ctx, job_id, spec, pictures)
    return pictures


def check_inputs(ctx: Context, job_id: str, spec: JobSpec, pictures: Sequence[Image.Image]) -> None:
    """Outside age-restricted channels (the spec asks for an output check), score the input images with the
    worker's classifier; a flagged one is recorded in the moderation log and fails the job.

    Raises:
        GenerationFailed: an input was flagged, or the classifier failed.
    """
    if ctx.classifier is None or not safety_of(spec).check_outputs:
        return
    try:
        scores = ctx.classifier.flags(pictures)
    except Exception as exc:
        log.error("image safety classifier %s failed on input images: %s", ctx.classifier.name, exc)
        raise GenerationFailed("the image safety check failed on your images; tell an admin") from None
    flagged = [i for i, score in enumerate(scores) if score >= ctx.safety_threshold]
    if not flagged:
        return
    shown = ", ".join(f"#{i + 1} ({scores[i]:.2f})" for i in flagged)
    output_check.report(ctx.conn, ctx.poster.http if ctx.poster else None, job_id, spec,
                        f"{ctx.classifier.name} flagged input image {shown}; refused")
    raise GenerationFailed("an image you gave was refused by this server's image safety check; nothing was charged")


def image_prompt(ctx: Context, job_id: str, spec: JobSpec) -> ImagePrompt | None:
    """The images of a job as an image prompt for the engine's IP-Adapter, or None for a text-only job.

    Raises:
        GenerationFailed: see `fetch_all`; or this worker has no IP-Adapter.
    """
    given = images_of(spec.extras)
    if given is None:
        return None
    if ctx.engine.adapter is None:
        raise GenerationFailed("this worker has no IP-Adapter (IMAGINE_IMAGE_IP_ADAPTER is empty)")
    pictures = fetch_all(ctx, job_id, spec, given.urls)
    with_text = any(part.text.strip() for part in spec.parts)
    return ctx.engine.adapter.image_prompt(pictures, given.weights, adapter_scale(given.iw, with_text))


def starting_image(ctx: Context, job_id: str, spec: JobSpec) -> Start | None:
    """The blended starting image of a job with input images, or None for a text-only job.

    Raises:
        GenerationFailed: see `fetch_all`.
    """
    given = images_of(spec.extras)
    if given is None:
        return None
    pictures = fetch_all(ctx, job_id, spec, given.urls)
    size = (spec.width, spec.height)
    drawn = described(spec, pictures, given.weights, ctx.describer) if given.iw > 0 else spec
    return Start(blend(ctx.engine.pipe, pictures, given.weights, size), image_strength(given.iw), drawn)


def described(spec: JobSpec, pictures: Sequence[Image.Image], weights: Sequence[float],
              describer: Describer | None) -> JobSpec:
    """`spec` with what its images show in the text the model is conditioned on, so that the model draws the
    images' content, not only their colours: with text, "<subjects> <text>" for each `::` part (the embedded
    model: "a green triangle" + "on a white background"); without (a blend), each image's own description as a
    part of its weight. Unchanged without a describer."""
    if describer is None:
        return spec
    if all(not part.text for part in spec.parts):
        parts = tuple(PromptPart(describer.prompts(p, seed=spec.seed)[0], w)
                      for p, w in zip(pictures, weights, strict=True))
    else:
        subjects = " and ".join(filter(None, (describer.subject(p) for p in pictures)))
        parts = tuple(PromptPart(f"{subjects} {part.text}".strip(), part.weight) for part in spec.parts)
    return dataclasses.replace(spec, parts=parts)


def blend(pipe: object, pictures: Sequence[Image.Image], weights: Sequence[float], size: tuple[int, int]
          ) -> Image.Image:
    """`pictures` cropped to `size`'s aspect and resized to it, then blended as the weighted mean of their VAE
    latents, decoded once (one picture: itself, cropped)."""
    fitted = [ImageOps.fit(p.convert("RGB"), size, Image.Resampling.LANCZOS) for p in pictures]
    if len(fitted) == 1:
        return fitted[0]
    vae, processor = pipe.vae, pipe.image_processor  # type: ignore[attr-defined]
    with torch.inference_mode():
        # 1. each picture -> its latent mean (the posterior's mode: no sampling noise)
        pixels = torch.cat([processor.preprocess(p) for p in fitted]).to(vae.device, vae.dtype)
        latents = vae.encode(pixels).latent_dist.mean
        # 2. the weighted mean over pictures
        w = torch.tensor(list(weights), device=latents.device, dtype=latents.dtype)
        mixed = (latents * (w / w.sum()).view(-1, 1, 1, 1)).sum(dim=0, keepdim=True)
        # 3. decode it
        decoded = vae.decode(mixed).sample
        result: Image.Image = processor.postprocess(decoded, output_type="pil")[0]
    return result


DESCRIBED_SIDE = 512
"""Longest side of the image a `/describe` answers with (a thumbnail of the member's image)."""


def describe(ctx: Context, job_id: str, spec: JobSpec) -> tuple[Image.Image, list[str]]:
    """`/describe`: the spec's one image, fetched and checked, as a thumbnail, and four prompts for it (seeded by
    the spec's seed: a re-roll has another).

    Raises:
        GenerationFailed: no describer on this worker, or as `fetch_all`.
    """
    given = images_of(spec.extras)
    if given is None or len(given.urls) != 1:
        raise GenerationFailed("malformed job payload: a describe job names exactly one image")
    if ctx.describer is None:
        raise GenerationFailed("this server has no image describer (IMAGINE_IMAGE_CAPTIONER is empty)")
    [picture] = fetch_all(ctx, job_id, spec, given.urls)
    prompts = ctx.describer.prompts(picture, seed=spec.seed)
    picture.thumbnail((DESCRIBED_SIDE, DESCRIBED_SIDE), Image.Resampling.LANCZOS)
    return picture, prompts
