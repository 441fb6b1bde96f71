r"""Decoupled classifiers (Kang et al., ICLR 2020): re-balance the classifier of a frozen representation.

Exported from :mod:`longtail_losses.twostage`: tau-normalisation (:func:`tau_normalize`), learnable weight
scaling (:class:`LearnableWeightScaling`) and the nearest class mean (:func:`nearest_class_mean`). cRT (classifier
re-training) is a recipe, written out in the docs' *Decoupled classifiers* page:
:func:`~longtail_losses.twostage.replace_classifier`, :func:`~longtail_losses.twostage.extract_features`, then
class-balanced batches (:class:`~longtail_losses.data.ClassAwareSampler`, ``power=0``) and cross-entropy.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longtail_losses._validation import check_features_labels, check_finite, check_int, check_weight_matrix

__all__ = ["LearnableWeightScaling", "NearestClassMean", "nearest_class_mean", "tau_normalize"]


@torch.no_grad()
def tau_normalize(classifier: nn.Module, tau: float = 1.0, *, keep_bias: bool = False) -> nn.Linear:
    r"""tau-normalised copy of a linear classifier :cite:`kang2020decoupling`, eq. (3).

    .. math::
        \tilde W_j = \frac{W_j}{\lVert W_j \rVert_2^{\tau}}

    A classifier trained on long-tailed data has larger weight norms for the head classes; ``tau=1`` makes every
    row unit-norm, ``tau=0`` changes nothing, values in between (Kang et al. pick :math:`\tau` on a validation
    set; they report about 0.7 on ImageNet-LT) interpolate. A zero row stays zero.

    **The bias** is dropped by default, as in Kang et al.'s code, which computes :math:`\tilde W x` only: a bias
    learned with the un-normalised rows has their scale and its own long-tail bias.

    Args:
        classifier: A linear classifier with a ``weight`` of shape :math:`(C, D)` (and optionally ``bias``).
        tau: The exponent :math:`\tau`, a finite real number.
        keep_bias: Copy the bias unchanged (``True``) or leave the new classifier without one (``False``).

    Returns:
        A new :class:`~torch.nn.Linear` on the device and in the dtype of ``classifier`` (left unchanged).

    Raises:
        TypeError: If ``classifier`` has no floating-point ``weight`` or ``tau`` is not a real number.
        ValueError: If the weight is not 2-D or ``tau`` is not finite.

    Example:
        >>> fc = nn.Linear(2, 2)
        >>> _ = fc.weight.data.copy_(torch.tensor([[3.0, 4.0], [0.6, 0.8]]))
        >>> tau_normalize(fc, 1.0).weight
        Parameter containing:
        tensor([[0.6000, 0.8000],
                [0.6000, 0.8000]], requires_grad=True)
        >>> tau_normalize(fc, 0.5).bias is None
        True
    """
    tau = check_finite("tau", tau)
    if not isinstance(classifier, nn.Module):
        raise TypeError(
            f"Expected `classifier` to be an nn.Module (e.g. nn.Linear), but got {type(classifier).__name__}"
        )
    weight = check_weight_matrix(classifier)
    if weight.ndim != 2:
        raise ValueError(
            f"Expected `classifier` weight to have shape (num_classes, features), but got {tuple(weight.shape)}"
        )
    norms = weight.norm(dim=1, keepdim=True)
    scale = torch.where(norms > 0, norms.pow(-tau), 1.0)  # a zero row stays zero
    bias = getattr(classifier, "bias", None)
    keep = bool(keep_bias) and isinstance(bias, Tensor)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=keep, device=weight.device, dtype=weight.dtype)
    out.weight.copy_(weight * scale)
    if keep and out.bias is not None and isinstance(bias, Tensor):
        out.bias.copy_(bias)
    return out


class LearnableWeightScaling(nn.Module):
    r"""Learnable weight scaling (LWS) :cite:`kang2020decoupling`, eq. (4): logits :math:`f_j z_j`, classifier frozen.

    .. math::
        \tilde W_j = f_j W_j, \qquad \text{here:}\quad \tilde z_j = f_j\, z_j(x),

    one learnable scale :math:`f_j` per class (initialised to 1) on the logits of ``classifier``, whose own
    parameters are frozen (restored by :meth:`unfreeze`): exactly :math:`f_j W_j x` for a linear classifier without
    bias; a bias is scaled too, as in Kang et al.'s code. Train ``lws.scales`` only, with class-balanced sampling,
    cross-entropy and a small learning rate.

    Args:
        classifier: The trained classifier, features :math:`(N, D)` to logits :math:`(N, C)`; one weight row per class.

    Shape:
        input: :math:`(N, D)`, the features (or what ``classifier`` takes, e.g. :math:`(N, D, H, W)` for a 1x1
        convolution of a dense head).
        output: :math:`(N, C)` (or :math:`(N, C, H, W)`): the scales act on the class dimension.

    Raises:
        TypeError: If ``classifier`` is not a module with a floating-point ``weight``.

    Example:
        >>> fc = nn.Linear(3, 2)
        >>> lws = LearnableWeightScaling(fc)
        >>> [name for name, p in lws.named_parameters() if p.requires_grad]
        ['scales']
        >>> x = torch.randn(4, 3)
        >>> torch.equal(lws(x), fc(x))  # scales start at 1
        True
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        weight = check_weight_matrix(classifier)
        self.classifier = classifier
        self._frozen = [(p, p.requires_grad) for p in classifier.parameters()]
        for param, _ in self._frozen:
            param.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(weight.shape[0], device=weight.device, dtype=weight.dtype))

    def unfreeze(self) -> None:
        """Restore the ``requires_grad`` that the classifier's parameters had before."""
        for param, requires_grad in self._frozen:
            param.requires_grad_(requires_grad)

    def forward(self, features: Tensor) -> Tensor:
        """Scaled logits ``classifier(features) * scales``, the scales on the class dimension (1, or 0 unbatched)."""
        logits = self.classifier(features)
        return logits * (self.scales if logits.ndim <= 2 else self.scales.view(-1, *([1] * (logits.ndim - 2))))

    def extra_repr(self) -> str:
        """Show the number of classes."""
        return f"num_classes={self.scales.shape[0]}"


class NearestClassMean(nn.Module):
    r"""Nearest-class-mean classifier: cosine similarity to the class-mean features; see :func:`nearest_class_mean`.

    Args:
        means: The class means :math:`\mu_j`, one row per class (kept as a buffer).

    Shape:
        input: :math:`(N, D)`, the features.
        output: :math:`(N, C)`, cosine similarities in :math:`[-1, 1]`.

    Raises:
        TypeError: If ``means`` is not a floating-point tensor.
        ValueError: If ``means`` is not 2-D.

    Example:
        >>> ncm = NearestClassMean(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> ncm(torch.tensor([[3.0, 1.0]]))
        tensor([[0.9487, 0.3162]])
    """

    means: Tensor

    def __init__(self, means: Tensor) -> None:
        super().__init__()
        if not isinstance(means, Tensor) or not means.dtype.is_floating_point:
            raise TypeError(f"Expected `means` to be a floating-point tensor, but got {means!r}")
        if means.ndim != 2:
            raise ValueError(f"Expected `means` to have shape (num_classes, features), but got {tuple(means.shape)}")
        self.register_buffer("means", means.detach().clone())

    def forward(self, features: Tensor) -> Tensor:
        """Cosine similarity of every feature vector to every class mean."""
        return F.normalize(features, dim=1) @ F.normalize(self.means, dim=1).T

    def extra_repr(self) -> str:
        """Show the number of classes and features."""
        return f"num_classes={self.means.shape[0]}, features={self.means.shape[1]}"


@torch.no_grad()
def nearest_class_mean(features: Tensor, labels: Tensor, num_classes: Optional[int] = None) -> NearestClassMean:
    r"""Nearest-class-mean (NCM) classifier :cite:`kang2020decoupling`, section 4 (classifier learning).

    The mean feature of each class, :math:`\mu_j = \frac{1}{n_j}\sum_{i: y_i = j} x_i`, over the (frozen)
    training features; prediction by cosine similarity,

    .. math::
        s_j(x) = \frac{x^\top \mu_j}{\lVert x \rVert\, \lVert \mu_j \rVert}, \qquad
        \hat y = \operatorname{argmax}_j s_j(x).

    A class without a training sample gets a zero mean and a similarity of 0. The means are computed in float64.

    Args:
        features: Training features, e.g. from :func:`~longtail_losses.twostage.extract_features`.
        labels: Their class indices.
        num_classes: Number of classes C. Default: ``max(labels) + 1``.

    Shape:
        features: :math:`(N, D)`.
        labels: :math:`(N)`.

    Returns:
        A :class:`NearestClassMean` whose ``means`` is :math:`(C, D)`, on the device and of the dtype of ``features``.

    Raises:
        TypeError: If ``features`` is not floating point or ``labels`` not integer.
        ValueError: If the shapes disagree, there is no sample, or a label is outside ``[0, num_classes)``.

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
        >>> ncm = nearest_class_mean(features, torch.tensor([0, 0, 1]))
        >>> ncm.means
        tensor([[2., 0.],
                [0., 1.]])
        >>> ncm(torch.tensor([[1.0, 0.5]])).argmax(1)
        tensor([0])
    """
    features, labels = check_features_labels(features, labels)
    if labels.numel() == 0:
        raise ValueError("Expected `features` to hold at least one sample, but got none")
    y = labels.long().to(features.device)
    low, high = int(y.min()), int(y.max())
    if num_classes is None:
        num_classes = high + 1
    check_int("num_classes", num_classes, 1)
    if low < 0 or high >= num_classes:
        raise ValueError(f"Expected every label to be in [0, {num_classes}), but got labels in [{low}, {high}]")
    x = features.to(torch.float64)
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_classes).to(torch.float64).clamp_min(1.0)
    return NearestClassMean((sums / counts.unsqueeze(1)).to(features.dtype))
