"""Private building blocks of `kfac.ops.loss_functions`, one family per file.

* `helpers`        index checks, replicated one-hot columns, `insert_slice_in_zeros`;
* `distributions`  the in-project Normal/Categorical/Bernoulli (log-prob, sampling);
* `base`           the abstract losses and the natural-parameter / distribution parts;
* `normal`         Gaussian losses;
* `logits`         categorical and multi-Bernoulli losses.
"""
