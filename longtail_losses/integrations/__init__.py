"""Adapters for the frameworks people train with: the Hugging Face ``Trainer`` (:mod:`.huggingface`).

None of these modules imports its framework: an adapter is plain ``torch`` code that speaks the framework's calling
convention, so ``import longtail_losses.integrations.huggingface`` works without ``transformers`` installed.
``import longtail_losses`` does not import this package. Lightning, timm and torchvision need no adapter: the docs'
*Integrations* pages show the recipes, and the optional extra ``longtail-losses[integrations]`` installs the
packages their tests run with.
"""

__all__ = ["huggingface"]
