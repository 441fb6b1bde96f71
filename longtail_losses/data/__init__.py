r"""Long-tailed image data sets: CIFAR-100-LT, ImageNet-LT, Fashion-MNIST-LT and a tiny offline digits set.

Every data set here is a :class:`torch.utils.data.Dataset` that returns ``(image, label)`` pairs like
torchvision's, and exposes ``.targets`` (a list of ints), so that :func:`longtail_losses.class_counts` counts
its classes without decoding a single image.

Long-tailed training sets follow the exponential profile of :cite:`cao2019ldam` (:func:`longtail_counts`), from the
head class 0 to the tail class :math:`C-1`; test sets stay balanced.

Only :mod:`torch` is needed to import this package. NumPy (CIFAR pickles, subsampling), Pillow (decoding images
in ``__getitem__``), torchvision (``download=True``) and scikit-learn (:func:`digits_lt`) are imported when a
function needs them; ``pip install longtail-losses[examples]`` installs all of them.

The package, by concern: :mod:`~longtail_losses.data.profile` (the long-tailed profile, subsampling),
:mod:`~longtail_losses.data.datasets` (the Dataset classes), :mod:`~longtail_losses.data.readers` (file formats),
one module per data set (:mod:`~longtail_losses.data.cifar`, :mod:`~longtail_losses.data.imagenet`,
:mod:`~longtail_losses.data.fashion_mnist`, :mod:`~longtail_losses.data.digits`), :mod:`~longtail_losses.data.counts`
(class counts, multi-label counts), :mod:`~longtail_losses.data.mosaic` (the multi-label Fashion-MNIST
mosaics) and :mod:`~longtail_losses.data.samplers`; all of it is importable from ``longtail_losses.data``.
"""

from longtail_losses.data.cifar import cifar10_lt, cifar100_lt
from longtail_losses.data.counts import class_counts, multilabel_counts
from longtail_losses.data.datasets import ImageListDataset, InMemoryImageDataset
from longtail_losses.data.digits import digits_lt
from longtail_losses.data.fashion_mnist import fashion_mnist_lt
from longtail_losses.data.imagenet import imagenet_lt
from longtail_losses.data.mosaic import MultiLabelImageDataset, fashion_mnist_mosaic
from longtail_losses.data.profile import longtail_counts, longtail_indices
from longtail_losses.data.readers import read_idx
from longtail_losses.data.samplers import ClassAwareSampler, MultiLabelClassAwareSampler, SeededBatchSampler

__all__ = [
    "ClassAwareSampler",
    "ImageListDataset",
    "InMemoryImageDataset",
    "MultiLabelClassAwareSampler",
    "MultiLabelImageDataset",
    "SeededBatchSampler",
    "cifar10_lt",
    "cifar100_lt",
    "class_counts",
    "digits_lt",
    "fashion_mnist_lt",
    "fashion_mnist_mosaic",
    "imagenet_lt",
    "longtail_counts",
    "longtail_indices",
    "multilabel_counts",
    "read_idx",
]
