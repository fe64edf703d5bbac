"""Private parts of `kfac.ops.optimizer`, one idea per file.

Stateful parts, each owning its variables and its update, wired by
`KfacOptimizer`:

* `momentum.Velocities`: the "velocity" slots, `v ← decay·v + coeff·vec`.
* `norm_constraint.NormConstraint`: KL clipping of the preconditioned gradient.
* `qmodel.QuadraticModel`: `(α, μ, q)` of the 2-D quadratic model.
* `damping_adaptation.DampingAdaptation`: the damping `λ` and its
  Levenberg-Marquardt adaptation state (`rho`, `prev_loss`, `q_model_change`).
* `non_finite_guard.NonFiniteGuard`: deferred writes and `num_skipped_steps`.
* `implicit_ops.ImplicitOps`: the deprecated implicit op creation and its cache.
* `update_rule.UpdateRule`: the step of each momentum type, from the parts above.

Pure helpers: `arguments` (validation where the user hands arguments over),
`vectors` (inner products of lists of parameter-shaped vectors), and the
functions of `norm_constraint`, `qmodel` and `damping_adaptation`.

`kfac.ops.optimizer` is the public facade; nothing here is part of the API.
"""
