"""The two evidence studies on Fashion-MNIST-LT.

:mod:`.paper_study` (``benchmarks/real_data_lt.py``) tests the BWLM paper's claims; :mod:`.method_study`
(``benchmarks/choosing_a_method.py``) sets every method of the library side by side.

They share :mod:`.common` (settings, data, metrics, the command line, report helpers), :mod:`.training` (the
tiny CNN, the SGD recipe and stage 2) and :mod:`.stats` (paired t-tests through scipy). The rows and their
losses come from :mod:`longtail_losses.paper`: the studies define no loss of their own.
"""
