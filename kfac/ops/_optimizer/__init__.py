"""Private pieces of `kfac.ops.optimizer`, one idea per file.

* `arguments`: validation of the `KfacOptimizer` arguments.
* `vectors`: inner products of lists of parameter-shaped vectors.
* `norm_constraint`: the squared Fisher norm and the KL-clipping coefficient.
* `qmodel`: the 2-D quadratic model over (preconditioned gradient, previous update).
* `damping_adaptation`: the Levenberg-Marquardt damping rule.

`kfac.ops.optimizer` is the public facade; nothing here is part of the API.
"""
