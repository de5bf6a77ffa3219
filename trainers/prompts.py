"""Prompt templates for zero-shot heads: each class's head is the mean of its prompts' embeddings."""

TEMPLATES = {
    # The 7-template ensemble the CLIP authors recommend for ImageNet.
    "openai-7": [
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ],
    "simple": ["a photo of a {}."],
}
