"""Which tower (mini-batch slice of a multi-tower model) a layer use belongs to.

A model built in towers registers each loss once per tower under one name
(`towers_by_loss`); tower `t` is everything the `t`-th tower of every loss
depends on. A parameter group whose uses split evenly and unambiguously over
the towers is registered once per tower (with reuse), as by hand.
"""

from typing import List
from typing import Optional
from typing import Sequence

import tensorflow.compat.v1 as tf

from kfac.ops._utils.graph import SubGraph


class Towers(object):
    """The towers of the registered losses (one tower when they disagree)."""

    def __init__(self, towers_by_loss: Sequence[Sequence]):
        counts = {len(towers) for towers in towers_by_loss}
        if len(counts) != 1 or counts == {1}:
            self._subgraphs = []
            self.num_towers = 1
            self.loss_inputs = [
                tf.nest.flatten(
                    [loss.inputs for towers in towers_by_loss for loss in towers]
                )
            ]
            return
        (self.num_towers,) = counts
        # loss_inputs[t]: the flat list of tower t's loss inputs.
        self.loss_inputs = [
            tf.nest.flatten([towers[t].inputs for towers in towers_by_loss])
            for t in range(self.num_towers)
        ]
        self._subgraphs = [SubGraph(inputs) for inputs in self.loss_inputs]

    def split(self, matches) -> Optional[List[list]]:
        """`matches` per tower (each in order), or None if they do not split.

        They split when every match's outputs belong to exactly one tower and
        every tower has the same number of them.
        """
        if self.num_towers == 1:
            return [list(matches)]
        per_tower = [[] for _ in range(self.num_towers)]
        for match in matches:
            towers = [
                t
                for t, subgraph in enumerate(self._subgraphs)
                if subgraph.is_member(match.outputs)
            ]
            if len(towers) != 1:
                return None
            per_tower[towers[0]].append(match)
        if len({len(tower) for tower in per_tower}) != 1:
            return None
        return per_tower
