"""Results that do not depend on batch company: one random generator per call, seeded by the call.

    python -m examples.seeded_generation

A diffusion pipeline draws its starting noise at random. With one generator for the whole batch,
a caller's noise depends on which calls share its batch and where it sits in it: the same prompt
and seed give a different image alone and in company. The diffusers documentation warns about this
and passes a list of generators, one per prompt. With microbatch, each call carries its own seed
and the batch function builds one generator per item from it, so every caller gets the output it
would get alone, in any batch and in any order.

Two batch functions show the pattern, each a toy "pipeline" of elementwise steps (so nothing but
the noise could make an item depend on its batch): :func:`generate` with a ``torch.Generator`` per
item, :func:`generate_numpy` with a ``numpy.random.Generator`` per item. Both group calls by
``steps`` (a setting the whole batch must share, as a pipeline runs every item for the same number
of steps). :func:`generate_shared` is the mistake the pattern avoids, for comparison.
"""

from __future__ import annotations

import operator
import zlib

import numpy as np
import torch

from microbatch import batch_columns

__all__ = ["LATENT", "generate", "generate_numpy", "generate_shared"]

LATENT = 16  # numbers per "image"


def _prompt_vector(prompt: str) -> torch.Tensor:
    # A stand-in for a text encoder: a fixed function of the prompt alone.
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(zlib.crc32(prompt.encode())))


def _denoise(latents: torch.Tensor, prompts: torch.Tensor, steps: int) -> torch.Tensor:
    # Elementwise steps over the whole batch at once: row i depends on row i only.
    for _ in range(steps):
        latents = 0.9 * latents + 0.1 * torch.tanh(latents + prompts)
    return latents


@batch_columns(max_batch_size=8, group_by=operator.itemgetter("steps"))
def generate(prompts: list[str], seeds: list[int], steps: list[int]) -> list[list[float]]:
    """One "image" per call; ``seeds[i]`` alone decides item ``i``'s noise (a torch.Generator per item)."""
    noise = torch.stack([torch.randn(LATENT, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    conditioning = torch.stack([_prompt_vector(p) for p in prompts])
    return _denoise(noise, conditioning, steps[0]).tolist()  # steps[0]: one group, so every item's steps


@batch_columns(max_batch_size=8, group_by=operator.itemgetter("steps"))
def generate_numpy(prompts: list[str], seeds: list[int], steps: list[int]) -> list[list[float]]:
    """:func:`generate` with a ``numpy.random.Generator`` per item."""
    noise = np.stack([np.random.default_rng(seed).standard_normal(LATENT) for seed in seeds])
    conditioning = torch.stack([_prompt_vector(p) for p in prompts]).double().numpy()
    latents = noise
    for _ in range(steps[0]):
        latents = 0.9 * latents + 0.1 * np.tanh(latents + conditioning)
    return latents.tolist()  # type: ignore[no-any-return]


@batch_columns(max_batch_size=8, group_by=operator.itemgetter("steps"))
def generate_shared(prompts: list[str], seeds: list[int], steps: list[int]) -> list[list[float]]:
    """The mistake: one generator for the batch, seeded by its first call. Outputs depend on the company."""
    generator = torch.Generator().manual_seed(seeds[0])
    noise = torch.randn(len(seeds), LATENT, generator=generator)
    conditioning = torch.stack([_prompt_vector(p) for p in prompts])
    return _denoise(noise, conditioning, steps[0]).tolist()


if __name__ == "__main__":
    calls = [("a red fox", 7, 20), ("a blue bird", 8, 20), ("a red fox", 7, 50)]
    alone = [generate(*call)[:3] for call in calls]
    together = [out[:3] for out in generate.map(calls)]
    print("alone:   ", alone)
    print("together:", together)
    print("same:", alone == together)
