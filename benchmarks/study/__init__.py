"""The two evidence studies on Fashion-MNIST-LT, split by concern.

* :mod:`.common`: the settings both studies share, the data and the metrics of one run;
* :mod:`.training`: the tiny CNN, the SGD recipe and stage 2 (independent heads on cached features);
* :mod:`.stats`: mean and std over seeds, paired comparisons and claims;
* :mod:`.paper_study`, :mod:`.paper_claims`, :mod:`.paper_report`: the BWLM paper's claims
  (``benchmarks/real_data_lt.py``);
* :mod:`.method_study`, :mod:`.method_report`: every method of the library side by side
  (``benchmarks/choosing_a_method.py``);
* :mod:`.plots`: the PNG figures of both; :mod:`.runner`: the process pool, the run record and the command line.

The paper's rows and their losses come from :mod:`longtail_losses.paper`, the loops from
:mod:`longtail_losses.training` and :mod:`longtail_losses.twostage`: the studies define no loss of their own.
"""
