"""Private building blocks of `kfac.ops.fisher_factors`, one family per file.

Import the public names from `kfac.ops.fisher_factors`. The split only keeps
each idea in a file of its own:

* `cache`           `FactorCache`: each factor built once, with the collection's
                    `KfacConfig` (what blocks see of a `LayerCollection`);
* `naming`          variable-scope strings built from factor arguments;
* `second_moments`  the blocked, exactly symmetric `ãᵀã / N` of Kronecker factors;
* `statistics`      initial values, `compute_cov`, `append_homog`, placement;
* `moving_average`  the one EMA update (with zero-debiasing);
* `base`            `FisherFactor`: `cov` and its moving-average update;
* `inverse_providing` `InverseProvidingFactor`: damped matrix powers in variables;
* `diagonal`        `DiagonalFactor`: element-wise powers on demand;
* `dense`           `FullFactor`, `NaiveDiagonalFactor` (generic parameters);
* `fully_connected` diagonal and Kronecker factors of dense layers;
* `conv`            diagonal and Kronecker factors of convolutions;
* `embedding`       the input factor of embedding layers;
* `multi_use`       `FullyConnectedMultiKF` and the temporal "series" quantities.
"""
