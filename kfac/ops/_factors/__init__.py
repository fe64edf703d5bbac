"""Private building blocks of `kfac.ops.fisher_factors`, one family per file.

Import the public names from `kfac.ops.fisher_factors`. The split only keeps
each idea in a file of its own:

* `config`          the module constants and `set_global_constants`;
* `naming`          variable-scope strings built from factor arguments;
* `second_moments`  the blocked, exactly symmetric `ãᵀã / N` of Kronecker factors;
* `base`            covariance helpers, the moving average, `FisherFactor`,
                    `InverseProvidingFactor` and `DiagonalFactor`;
* `dense`           `FullFactor`, `NaiveDiagonalFactor` (generic parameters);
* `fully_connected` diagonal and Kronecker factors of dense layers;
* `conv`            diagonal and Kronecker factors of convolutions;
* `embedding`       the input factor of embedding layers;
* `multi_use`       `FullyConnectedMultiKF` and the temporal "series" quantities.
"""
