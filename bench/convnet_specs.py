"""The optimizer configurations of the convnet benchmark (`bench.convnet`):
the SGD references and learning-rate grids per architecture, every K-FAC
configuration measured for issue #14 (the grid's runs, and the paired
comparisons `--ekfac`, `--reduce`, `--amortized`, `--schedule`, `--tune`,
`--combine`), and the choice of one comparison's runs (`comparison_specs`).

Every function returns fresh `OptimizerSpec`s; the paired comparisons start
with an SGD reference that `comparison_specs` replaces by the
architecture's (`SGD_REFERENCES`).
"""

import dataclasses
from typing import Optional
from typing import Sequence

from kfac.examples import comparison
from kfac.examples.comparison_training import OptimizerSpec

INVERSE_PERIOD = 10
LONG_PERIOD = 5 * INVERSE_PERIOD

SGD_REFERENCE = OptimizerSpec("sgd", 0.03, momentum=0.9, label="sgd")
# Initial damping 0.01 blows up within 3 steps (the first inverses come
# from one batch; LM adaptation moves damping only every 5 steps).
QMODEL = dict(learning_rate=1.0, damping=0.1, momentum=0.0)
REGULAR = dict(learning_rate=0.1, damping=0.01, momentum=0.9, norm_constraint=0.01)


# Learning-rate grids: 10x each way of the best value (SGD 0.03, Adam 1e-3
# on this model and budget).
SGD_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def kfac_specs():
    """Every K-FAC configuration of the optimizer comparison (#14), labelled
    by what differs from the plain one: the conv input factors from sampled
    patches (`sub_sample_patches`, at most 3 per patch coordinate) and
    covariances every `cov_update_every` steps."""
    runs = []
    for kind, optimizer in (("kfac_qmodel", QMODEL), ("kfac", REGULAR)):
        for sub_sample, cov_every in ((False, 1), (True, 1), (True, 2)):
            label = kind + (" sampled patches" if sub_sample else "")
            if cov_every > 1:
                label += " cov every {}".format(cov_every)
            runs.append(OptimizerSpec(
                kind, inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
                sub_sample_patches=sub_sample, cov_update_every=cov_every,
                label=label, **optimizer))
    # The quadratic model's runs grow unstable after ~200 steps: the
    # Levenberg-Marquardt rule drives the damping from 0.1 to its floor
    # (1e-5) by then. A larger initial damping, and higher floors.
    variants = (("damping=1", dict(damping=1.0)),
                ("min_damping=1e-3", dict(min_damping=1e-3)),
                ("min_damping=1e-2", dict(min_damping=1e-2)))
    for name, change in variants:
        runs.append(OptimizerSpec(
            "kfac_qmodel", inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
            sub_sample_patches=True, label="kfac_qmodel sampled patches " + name,
            **dict(QMODEL, **change)))
    return runs


# The learning-rate schedules tried against the noise floor K-FAC meets
# after a few hundred steps: (label, decay_start, decay_half_life), steps.
QMODEL_DECAYS = (("decay 300/300", 300, 300), ("decay 200/600", 200, 600))
REGULAR_DECAY = ("decay 500/500", 500, 500)
AMORTIZED = dict(inv_update_every=20, cov_update_every=5, cov_ema_decay=0.95,
                 spread_inverse_updates=True)
EVERY_STEP = dict(inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
                  cov_update_every=1, spread_inverse_updates=False)
# Covariances every second step, the inverses spread over their period.
EVERY_OTHER_STEP = dict(EVERY_STEP, cov_update_every=2, spread_inverse_updates=True)
# The quadratic model with the damping floor that kept it stable (1e-2).
QMODEL_FLOORED = dict(QMODEL, min_damping=1e-2)


def schedule_specs():
    """SGD (the reference), then K-FAC with a halving learning rate: the
    quadratic model (damping floor 1e-2; its chosen step scaled) with
    amortised statistics (covariances every 5 steps, inverses every 20) and
    every step's, and regular momentum with amortised statistics."""
    qmodel = QMODEL_FLOORED
    runs = [SGD_REFERENCE]
    for label, start, half_life in QMODEL_DECAYS:
        runs.append(OptimizerSpec(
            "kfac_qmodel", label="kfac_qmodel cov every 5 inv every 20 " + label,
            decay_start=start, decay_half_life=half_life, **AMORTIZED, **qmodel))
    runs.append(OptimizerSpec(
        "kfac_qmodel", label="kfac_qmodel decay 200/400", decay_start=200,
        decay_half_life=400, inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
        **qmodel))
    label, start, half_life = REGULAR_DECAY
    runs.append(OptimizerSpec(
        "kfac", label="kfac cov every 5 inv every 20 " + label, decay_start=start,
        decay_half_life=half_life, **AMORTIZED, **REGULAR))
    return runs


def residual_kfac_specs():
    """The K-FAC runs of the residual convnet's comparison: the quadratic
    model (damping floor 1e-2) and regular momentum with statistics every
    step (inverses every 10), each also with a halving learning rate, and the
    quadratic model with amortised statistics."""
    qmodel = QMODEL_FLOORED
    label, start, half_life = QMODEL_DECAYS[0]
    reg_label, reg_start, reg_half_life = REGULAR_DECAY
    return [
        OptimizerSpec("kfac_qmodel", label="kfac_qmodel", **EVERY_STEP, **qmodel),
        OptimizerSpec("kfac_qmodel", label="kfac_qmodel " + label, decay_start=start,
                      decay_half_life=half_life, **EVERY_STEP, **qmodel),
        OptimizerSpec("kfac_qmodel", label="kfac_qmodel cov every 5 inv every 20",
                      **AMORTIZED, **qmodel),
        OptimizerSpec("kfac", label="kfac", **EVERY_STEP, **REGULAR),
        OptimizerSpec("kfac", label="kfac " + reg_label, decay_start=reg_start,
                      decay_half_life=reg_half_life, **EVERY_STEP, **REGULAR),
    ]


# The paired comparisons' reference on the residual convnet: its best SGD
# learning rate (docs/benchmark/residual.md), named like SGD_REFERENCE.
RESIDUAL_SGD_REFERENCE = OptimizerSpec("sgd", 0.1, momentum=0.9, label="sgd")


# architecture: the SGD reference of its paired comparisons
SGD_REFERENCES = {"convnet": SGD_REFERENCE, "residual": RESIDUAL_SGD_REFERENCE}


def tuning_specs():
    """SGD (lr 0.1, the residual convnet's best), then K-FAC's settings
    around those of `residual_kfac_specs()`, one change each: regular momentum
    with a 3x larger learning rate, 10x smaller or larger damping, 10x
    tighter or looser norm constraint; the quadratic model with damping
    floors 3e-2 and 1e-1 and with a slower covariance average (0.99)."""
    runs = [RESIDUAL_SGD_REFERENCE]
    regular = (("lr=0.3", dict(learning_rate=0.3)),
               ("damping=1e-3", dict(damping=1e-3)),
               ("damping=0.1", dict(damping=0.1)),
               ("nc=1e-3", dict(norm_constraint=1e-3)),
               ("nc=0.1", dict(norm_constraint=0.1)))
    for label, change in regular:
        runs.append(OptimizerSpec("kfac", label="kfac " + label, **EVERY_STEP,
                                  **dict(REGULAR, **change)))
    qmodel = (("min_damping=3e-2", dict(min_damping=3e-2), 0.95),
              ("min_damping=1e-1", dict(min_damping=1e-1), 0.95),
              ("cov_ema_decay=0.99", dict(min_damping=1e-2), 0.99))
    for label, change, decay in qmodel:
        runs.append(OptimizerSpec(
            "kfac_qmodel", label="kfac_qmodel " + label,
            inv_update_every=INVERSE_PERIOD, cov_ema_decay=decay,
            **dict(QMODEL, **change)))
    return runs


# The regular-momentum settings the residual convnet's tuning found
# (`tuning_specs`): damping 0.1, norm constraint 1e-3.
TUNED_REGULAR = dict(REGULAR, damping=0.1, norm_constraint=1e-3)


def combined_specs():
    """SGD (lr 0.1), then regular-momentum K-FAC with the two changes that
    helped in `tuning_specs()` on the residual convnet (damping 0.1, norm
    constraint 1e-3), together, with the halving learning rate, and together
    with amortised statistics (covariances every 5 steps, inverses every 20)."""
    runs = [RESIDUAL_SGD_REFERENCE]
    tuned = TUNED_REGULAR
    label, start, half_life = REGULAR_DECAY
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 nc=1e-3",
                              **EVERY_STEP, **tuned))
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 nc=1e-3 " + label,
                              decay_start=start, decay_half_life=half_life,
                              **EVERY_STEP, **tuned))
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 " + label,
                              decay_start=start, decay_half_life=half_life,
                              **EVERY_STEP, **dict(REGULAR, damping=0.1)))
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 nc=1e-3 cov every 5 "
                              "inv every 20", **AMORTIZED, **tuned))
    return runs


def sampled_specs():
    """SGD (the reference), then the tuned regular K-FAC (`TUNED_REGULAR`)
    with every convolution's input factor from sampled patches (gathered
    without extracting the rest): statistics every step (inverses every 10),
    amortised (covariances every 5, inverses every 20) and in between
    (covariances every 2, inverses every 10, spread); the amortised run also
    without sampling, and with a 3x larger learning rate."""
    runs = [SGD_REFERENCE]
    for label, schedule, sampled, change in (
            ("sampled", EVERY_STEP, True, {}),
            ("sampled cov every 2", EVERY_OTHER_STEP, True, {}),
            ("sampled cov every 5 inv every 20", AMORTIZED, True, {}),
            ("cov every 5 inv every 20", AMORTIZED, False, {}),
            ("sampled cov every 5 inv every 20 lr=0.3", AMORTIZED, True,
             dict(learning_rate=0.3))):
        runs.append(OptimizerSpec(
            "kfac", label="kfac tuned " + label, sub_sample_patches=sampled,
            **schedule, **dict(TUNED_REGULAR, **change)))
    return runs


# architecture: the best Adam run of its grid (docs/benchmark/convnet.md,
# residual.md), named like the SGD references' "sgd".
ADAM_REFERENCES = {"convnet": OptimizerSpec("adam", 3e-3, label="adam"),
                   "residual": OptimizerSpec("adam", 1e-2, label="adam")}
# K-FAC's best configuration from `sampled_specs` (both architectures, batch
# 128): sampled patches, covariances every second step.
SAMPLED_EVERY_OTHER_STEP = OptimizerSpec(
    "kfac", label="kfac", sub_sample_patches=True, **EVERY_OTHER_STEP, **TUNED_REGULAR)
# ... and from `stats_batch_specs` (both, batch 256): those statistics from a
# quarter of each batch, every step.
STATS_QUARTER_EVERY_STEP = dataclasses.replace(
    SAMPLED_EVERY_OTHER_STEP, stats_batch_fraction=0.25, **EVERY_STEP)
# architecture: K-FAC's best configuration measured on it (the same on both).
KFAC_REFERENCES = {"convnet": STATS_QUARTER_EVERY_STEP,
                   "residual": STATS_QUARTER_EVERY_STEP}


# A schedule for the second half of a run, on the budget's clock: the
# learning rate halves every tenth of the time budget after its first half
# (1/32 of it at the end), at the same seconds for every optimizer.
ANNEALED = dict(decay_clock="budget", decay_start=0.5, decay_half_life=0.1)


def decayed(spec, weight_decay):
    """`spec` with a decoupled weight decay (`OptimizerSpec.weight_decay`),
    labelled `"<name> wd=<decay>"`."""
    return dataclasses.replace(spec, weight_decay=weight_decay,
                               label="{} wd={:g}".format(spec.name, weight_decay))


def weight_decay_specs(specs, weight_decays):
    """Every spec with each weight decay (`decayed`), decay by decay."""
    return [decayed(spec, decay) for decay in weight_decays for spec in specs]


def best_specs(architecture):
    """The best configuration of each optimizer on `architecture`: SGD, Adam
    and K-FAC, for long runs (`--budgets` of minutes)."""
    return [SGD_REFERENCES[architecture], ADAM_REFERENCES[architecture],
            KFAC_REFERENCES[architecture]]


# optimizer name: the weight decay of its best test accuracy after 180 s,
# annealed (docs/benchmark/<architecture>_best_annealed_wd_b256.md).
BEST_WEIGHT_DECAYS = {"convnet": {"sgd": 1e-4, "adam": 3e-4, "kfac": 3e-3},
                      "residual": {"sgd": 3e-3, "adam": 3e-4, "kfac": 3e-3}}
# K-FAC's settings were tuned for training loss; for test accuracy under
# weight decay, each changed once: (label, change).
REGULARIZED_CHANGES = (("damping=0.3", dict(damping=0.3)),
                       ("damping=1", dict(damping=1.0)),
                       ("nc=1e-4", dict(norm_constraint=1e-4)),
                       ("nc=1e-2", dict(norm_constraint=1e-2)))


def best_weight_decay_specs(architecture):
    """The best run of each optimizer with its best weight decay
    (`BEST_WEIGHT_DECAYS`, `decayed`), annealed (`ANNEALED`)."""
    decays = BEST_WEIGHT_DECAYS[architecture]
    return [decayed(dataclasses.replace(spec, **ANNEALED), decays[spec.name])
            for spec in best_specs(architecture)]


# The weight decays `BEST_WEIGHT_DECAYS` were chosen from (`--best --annealed
# --weight_decays=0,3e-4,3e-3`), and decays past the largest of them.
WEIGHT_DECAY_GRID = (0.0, 3e-4, 3e-3)
BEYOND_WEIGHT_DECAY_GRID = (6e-3, 1e-2)


def stronger_decay_specs(architecture):
    """`best_weight_decay_specs`, then each of its runs whose best decay was
    the largest of `WEIGHT_DECAY_GRID` (the grid's edge) once with each of
    `BEYOND_WEIGHT_DECAY_GRID`."""
    best = best_weight_decay_specs(architecture)
    at_edge = [spec for spec in best if spec.weight_decay == max(WEIGHT_DECAY_GRID)]
    return best + [decayed(dataclasses.replace(spec, label=spec.kind), decay)
                   for spec in at_edge for decay in BEYOND_WEIGHT_DECAY_GRID]


def kfac_changed_specs(architecture, changes):
    """`best_weight_decay_specs`, then its K-FAC run once per `(label,
    change)` of `changes`, labelled `"<its label> <label>"`."""
    best = best_weight_decay_specs(architecture)
    kfac = best[-1]
    return best + [dataclasses.replace(kfac, label=kfac.label + " " + label, **change)
                   for label, change in changes]


# K-FAC's updates are clipped for most of a run, so the annealing leaves
# their size alone until the bound stops binding, unless the bound follows
# the schedule too.
SCHEDULED_CLIP_CHANGES = (("scheduled nc", dict(scheduled_norm_constraint=True)),)


def scheduled_clip_specs(architecture):
    """`best_weight_decay_specs`, then its K-FAC run with the norm constraint
    following the learning-rate schedule (`scheduled_norm_constraint`)."""
    return kfac_changed_specs(architecture, SCHEDULED_CLIP_CHANGES)


def regularized_specs(architecture):
    """`best_weight_decay_specs`, then its K-FAC run with one of
    `REGULARIZED_CHANGES` each."""
    return kfac_changed_specs(architecture, REGULARIZED_CHANGES)


# K-FAC's batch sizes in `large_batch_specs`, as multiples of the others'.
BATCH_MULTIPLES = (2, 4)


def large_batch_specs(architecture):
    """`best_specs`, then its K-FAC run with each of `BATCH_MULTIPLES` times
    the batch (`OptimizerSpec.batch_multiple`; Martens & Grosse 2015 gave
    K-FAC growing batches), settings otherwise unchanged."""
    best = best_specs(architecture)
    kfac = best[-1]
    return best + [dataclasses.replace(kfac, batch_multiple=multiple,
                                       label="kfac batch x{}".format(multiple))
                   for multiple in BATCH_MULTIPLES]


# K-FAC's statistics from an eighth of a 4x batch: half a mini-batch.
STATS_EIGHTH = 0.125
# K-FAC at larger batches, changed once more each: (label, change).
LARGE_BATCH_CHANGES = (
    ("x3", dict(batch_multiple=3)),
    ("x4 stats 1/8", dict(batch_multiple=4, stats_batch_fraction=STATS_EIGHTH)),
    ("x4 nc=3e-3", dict(batch_multiple=4, norm_constraint=3e-3)),
    ("x4 damping=0.03", dict(batch_multiple=4, damping=0.03)),
)


def large_batch_tuning_specs(architecture):
    """The best SGD and Adam runs, then the best K-FAC run with each of
    `LARGE_BATCH_CHANGES`: 3x the batch; 4x with its statistics from an
    eighth of the batch (half a mini-batch, where a quarter is one), with a
    looser norm constraint, or with less damping."""
    sgd, adam, kfac = best_specs(architecture)
    return [sgd, adam] + [dataclasses.replace(kfac, label="kfac batch " + label,
                                              **change)
                          for label, change in LARGE_BATCH_CHANGES]


# The fastest of them on the convnet (docs/benchmark/convnet_large_batch_tune_b256.md).
LARGE_BATCH_BEST = ("x4 damping=0.03", dict(batch_multiple=4, damping=0.03))


def large_batch_best_specs(architecture):
    """The best SGD and Adam runs, then the best K-FAC run with
    `LARGE_BATCH_BEST`, alone and with its statistics from an eighth of the
    batch; for repeats with other seeds."""
    sgd, adam, kfac = best_specs(architecture)
    label, change = LARGE_BATCH_BEST
    best = dataclasses.replace(kfac, label="kfac batch " + label, **change)
    eighth = dataclasses.replace(best, label=best.label + " stats 1/8",
                                 stats_batch_fraction=STATS_EIGHTH)
    return [sgd, adam, best, eighth]


def large_batch_weight_decay_specs(architecture, multiple=4, decay_factors=(1, 3)):
    """`best_weight_decay_specs` (each optimizer's best run with its best
    weight decay, annealed), then K-FAC with `LARGE_BATCH_BEST`'s damping at
    `multiple` times the batch, annealed, with K-FAC's decay per step times
    each of `decay_factors` (its steps are `multiple` times fewer, so the
    decay per example is that much less at equal decay per step)."""
    best = best_weight_decay_specs(architecture)
    kfac = best[-1]
    _, change = LARGE_BATCH_BEST
    change = dict(change, batch_multiple=multiple)
    return best + [dataclasses.replace(
        kfac, label="kfac batch x{} damping={:g} wd={:g}".format(
            multiple, change["damping"], factor * kfac.weight_decay),
        weight_decay=factor * kfac.weight_decay, **change)
        for factor in decay_factors]


def double_batch_weight_decay_specs(architecture):
    """`large_batch_weight_decay_specs` at 2x the batch, K-FAC's decay per
    step times 1 and 2."""
    return large_batch_weight_decay_specs(architecture, 2, (1, 2))


def sampled_tuning_specs():
    """SGD (the reference), then the convnet's best K-FAC configuration at the
    time (`SAMPLED_EVERY_OTHER_STEP`) and its settings changed one at a time:
    damping 0.03 and 0.3, norm constraint 1e-2 and 1e-4, learning rate 0.3,
    covariance decay 0.9."""
    base = SAMPLED_EVERY_OTHER_STEP
    runs = [SGD_REFERENCE, dataclasses.replace(base, label="kfac tuned")]
    changes = (("damping=0.03", dict(damping=0.03)), ("damping=0.3", dict(damping=0.3)),
               ("nc=1e-2", dict(norm_constraint=1e-2)),
               ("nc=1e-4", dict(norm_constraint=1e-4)),
               ("lr=0.3", dict(learning_rate=0.3)),
               ("cov_ema_decay=0.9", dict(cov_ema_decay=0.9)))
    for label, change in changes:
        runs.append(dataclasses.replace(base, label="kfac tuned " + label, **change))
    return runs


# architecture: the K-FAC runs of its optimizer comparison
KFAC_SPECS = {"convnet": kfac_specs, "residual": residual_kfac_specs}
# The residual network (batch norm) trains best at larger learning rates:
# in a first grid like the convnet's, SGD's best was 0.3 and Adam's 1e-2,
# each at the edge.
RESIDUAL_SGD_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
RESIDUAL_ADAM_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# architecture: (SGD learning rates, Adam learning rates)
GRIDS = {"convnet": (SGD_LRS, ADAM_LRS),
         "residual": (RESIDUAL_SGD_LRS, RESIDUAL_ADAM_LRS)}


def grid_specs(architecture="convnet", tuned_kfac=False):
    """SGD with momentum 0.9 and Adam over their grids, then the
    architecture's K-FAC runs (`KFAC_SPECS`; `tuned_kfac`: its best
    configuration, `KFAC_REFERENCES`, alone)."""
    sgd_lrs, adam_lrs = GRIDS[architecture]
    runs = [OptimizerSpec("sgd", lr, momentum=0.9, label="sgd lr={:g}".format(lr))
            for lr in sgd_lrs]
    runs += [OptimizerSpec("adam", lr, label="adam lr={:g}".format(lr))
             for lr in adam_lrs]
    if tuned_kfac:
        return runs + [KFAC_REFERENCES[architecture]]
    return runs + KFAC_SPECS[architecture]()


def paired_specs(approximations_and_periods, qmodel=QMODEL):
    """SGD (the reference), then for the quadratic model (`qmodel`'s settings)
    and regular momentum with the norm constraint, one run per
    `(approximation, inverse period)` at otherwise equal settings."""
    runs = [SGD_REFERENCE]
    for kind, optimizer in (("kfac_qmodel", qmodel), ("kfac", REGULAR)):
        for approximation, period in approximations_and_periods:
            runs.append(OptimizerSpec(
                kind, inv_update_every=period, cov_ema_decay=0.95,
                approximation=None if approximation == "kron" else approximation,
                label="{} {} inv={}".format(kind, approximation, period), **optimizer))
    return runs


def ekfac_specs():
    """K-FAC and EKFAC pairs of equal settings at equal inverse periods, and
    EKFAC with a 5x longer eigenbasis period (`paired_specs`)."""
    return paired_specs((("kron", INVERSE_PERIOD), ("ekfac", INVERSE_PERIOD),
                         ("ekfac", LONG_PERIOD)))


def amortized_specs():
    """SGD (the reference), then K-FAC with its statistics amortised over
    several steps: covariances every 5 or 10 steps and inverses every 20 or
    50 (spread over the steps between), for the quadratic model (damping
    floor 1e-2) and regular momentum (norm constraint 0.01, and 0.1)."""
    runs = [SGD_REFERENCE]
    qmodel = QMODEL_FLOORED
    schedules = ((5, 20), (10, 50))
    for kind, optimizer in (("kfac_qmodel", qmodel), ("kfac", REGULAR)):
        for cov_every, inv_every in schedules:
            runs.append(OptimizerSpec(
                kind, inv_update_every=inv_every, cov_update_every=cov_every,
                cov_ema_decay=0.95, spread_inverse_updates=True,
                label="{} cov every {} inv every {}".format(kind, cov_every, inv_every),
                **optimizer))
    runs.append(OptimizerSpec(
        "kfac", inv_update_every=20, cov_update_every=5, cov_ema_decay=0.95,
        spread_inverse_updates=True, label="kfac cov every 5 inv every 20 nc=0.1",
        **dict(REGULAR, norm_constraint=0.1)))
    return runs


def reduce_specs():
    """KFC (KFAC-expand) and KFAC-reduce convolution blocks at equal settings
    (`paired_specs`); the quadratic model with the damping floor 1e-2 that
    kept it stable in the optimizer comparison."""
    return paired_specs((("kron", INVERSE_PERIOD), ("kron_reduce", INVERSE_PERIOD)),
                        qmodel=QMODEL_FLOORED)


def stats_batch_specs():
    """SGD (the reference), K-FAC's best configuration at batch 128
    (`SAMPLED_EVERY_OTHER_STEP`: statistics of the whole batch every second
    step), then with its statistics from a second forward pass on part of
    each batch (`stats_batch_fraction`): a quarter every second step and
    every step, a half every step."""
    base = SAMPLED_EVERY_OTHER_STEP
    runs = [SGD_REFERENCE, base]
    for fraction, schedule in ((0.25, EVERY_OTHER_STEP), (0.25, EVERY_STEP),
                               (0.5, EVERY_STEP)):
        label = "kfac stats {:g} of the batch cov every {}".format(
            fraction, schedule["cov_update_every"])
        runs.append(dataclasses.replace(
            base, label=label, stats_batch_fraction=fraction, **schedule))
    return runs


# mode flag: (its specs, the report's title); the specs start with an SGD
# reference, replaced by the architecture's (`SGD_REFERENCES`).
PAIRED_MODES = {
    "ekfac": (ekfac_specs, "EKFAC vs K-FAC"),
    "reduce": (reduce_specs, "KFAC-reduce vs KFC"),
    "amortized": (amortized_specs, "Amortised K-FAC statistics"),
    "schedule": (schedule_specs, "K-FAC with a halving learning rate"),
    "tune": (tuning_specs, "K-FAC's settings, one change each"),
    "combine": (combined_specs, "K-FAC's helpful changes combined"),
    "sampled": (sampled_specs, "Tuned K-FAC with sampled patches"),
    "tune_sampled": (sampled_tuning_specs, "K-FAC's best settings, one change each"),
    "stats_batch": (stats_batch_specs, "K-FAC's statistics from part of the batch"),
}


# mode flag: (its specs of an architecture, the report's title); reported
# like the grid, against the best SGD and Adam runs.
BEST_MODES = {
    "best": (best_specs, "The best run of each optimizer"),
    "best_wd": (best_weight_decay_specs,
                "The best runs with their best weight decays, annealed"),
    "regularized": (regularized_specs, "The best runs with weight decay, "
                    "K-FAC's retuned for it, annealed"),
    "stronger_decay": (stronger_decay_specs, "The best runs with weight decay, "
                       "and those at the grid's edge with stronger decay, annealed"),
    "scheduled_clip": (scheduled_clip_specs, "The best runs with weight decay, "
                       "and K-FAC's with its norm constraint annealed, annealed"),
    "large_batch": (large_batch_specs, "The best runs, and K-FAC at 2x and 4x "
                    "the batch"),
    "large_batch_tune": (large_batch_tuning_specs, "K-FAC at larger batches, "
                         "one more change each"),
    "large_batch_best": (large_batch_best_specs, "K-FAC's best at 4x the batch"),
    "large_batch_wd": (large_batch_weight_decay_specs, "The best runs with weight "
                       "decay, and K-FAC's at 4x the batch, annealed"),
    "double_batch_wd": (double_batch_weight_decay_specs, "The best runs with "
                        "weight decay, and K-FAC's at 2x the batch, annealed"),
}


def comparison_specs(mode: Optional[str], architecture: str, kfac_only: bool = False,
                     tuned_kfac: bool = False, annealed: bool = False,
                     weight_decays: Sequence[float] = ()):
    """`(name, specs, title, references)` of a comparison: a paired `mode`
    (`PAIRED_MODES`) against the architecture's SGD reference, `"best"`
    (`best_specs`) or another of `BEST_MODES`, or (None) the architecture's
    grid (`kfac_only`: its SGD reference and K-FAC runs; `tuned_kfac`: the
    grids and K-FAC's best configuration, named `<architecture>_tuned`).
    `annealed` (the best runs or the tuned grid only): every run with the
    `ANNEALED` schedule, the name ending in `_annealed`. `weight_decays` (the
    best runs only): each best run once per decay (`weight_decay_specs`),
    the name ending in `_wd`."""
    if weight_decays:
        if mode != "best":
            raise ValueError("weight_decays apply to the best runs (--best) only.")
        name, specs, title, references = comparison_specs(
            mode, architecture, annealed=annealed)
        return (name + "_wd", weight_decay_specs(specs, weight_decays),
                title + ", with weight decay", references)
    if annealed:
        if mode != "best" and not (mode is None and tuned_kfac):
            raise ValueError("annealed applies to the best runs (--best) and the "
                             "tuned grid (--tuned_kfac) only.")
        name, specs, title, references = comparison_specs(
            mode, architecture, tuned_kfac=tuned_kfac)
        return (name + "_annealed", [dataclasses.replace(run, **ANNEALED)
                                     for run in specs],
                title + ", annealed in the second half", references)
    if mode in BEST_MODES:
        make_specs, title = BEST_MODES[mode]
        return (architecture + "_" + mode, make_specs(architecture), title,
                ("sgd", "adam"))
    if mode is not None:
        make_specs, title = PAIRED_MODES[mode]
        specs = [SGD_REFERENCES[architecture]] + make_specs()[1:]
        return architecture + "_" + mode, specs, title, (comparison.REFERENCE,)
    if tuned_kfac:
        return (architecture + "_tuned", grid_specs(architecture, tuned_kfac=True),
                "Optimizers", ("sgd", "adam"))
    specs = grid_specs(architecture)
    if kfac_only:
        specs = [SGD_REFERENCES[architecture]] + KFAC_SPECS[architecture]()
    return architecture, specs, "Optimizers", ("sgd", "adam")
