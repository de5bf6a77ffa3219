"""Prompts for zero-shot heads and text losses: shipped template sets, user templates, class names
and per-class descriptions. A class's zero-shot weight is the mean of its prompts' embeddings."""
from __future__ import annotations

# The 80 templates the CLIP authors used for ImageNet (Radford et al. 2021, notebook "Prompt_Engineering_for_ImageNet").
OPENAI_80 = [
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
]

TEMPLATES = {
    "openai-80": OPENAI_80,
    # The 7-template subset the CLIP authors recommend for ImageNet.
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


def templates_for(model) -> list[str]:
    """The templates of a ModelConfig: the user's own when given, else the named shipped set."""
    return list(model.custom_templates) or TEMPLATES[model.templates]


def class_prompts(model, classes: list[str]) -> list[list[str]]:
    """Per class, its prompts: every template filled with the class's prompt name
    (`model.class_names`, else the data's class name), then its descriptions (`model.class_descriptions`)."""
    templates = templates_for(model)
    prompts = []
    for name in classes:
        shown = model.class_names.get(name, name)
        prompts.append([t.format(shown) for t in templates] + list(model.class_descriptions.get(name, [])))
    return prompts


def context_prompts(contexts: list[str], model, classes: list[str]) -> list[list[str]]:
    """Per context, "a {context} of a {class}." for every class (CaRFT's context distribution)."""
    return [[f"a {context} of a {model.class_names.get(name, name)}." for name in classes] for context in contexts]
