"""Which layer's outputs the tagging heads read: a sweep, chosen on the select sentences.

A decoder's last layer is shaped to predict the next token; the words themselves (their part
of speech, their phrase, whether they name an entity) are read best from a middle layer, as
probing studies of LMs find. Both sides of a comparison get the same sweep (`magnet eval
paper`'s base causal and adapted probes), and `magnet train-tagger` ships heads at the layer
it chooses:

    layers = sweep_layers(engine.n_layers)                          # 30 layers: 4 8 11 15 19 22 26 30
    choice = choose_layer(tasks, fit, fit_x, select, select_x, config)
    choice.layer, choice.scores                                     # -> heads fit again there, full steps

Each swept layer gets the same short head training (SWEEP_STEPS) for every task; the layer
whose heads score best on the select sentences, averaged over the tasks, is chosen (ties: the
shallower one, the cheaper forward). The report split is never read.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from magnet.progress import progress
from magnet.tagging.features import LayerFeatures
from magnet.tagging.head_training import HeadTrainConfig, train_head

SWEEP_COUNT = 8  # layers tried: evenly spaced, the last one included
SWEEP_STEPS = 1000  # head steps per task and layer while sweeping (the chosen layer's heads train in full)


def sweep_layers(n_layers: int, count: int = SWEEP_COUNT) -> list[int]:
    """`count` layers (1-based) evenly spaced up to the last: 30 -> 4 8 11 15 19 22 26 30."""
    return sorted({max(1, round(n_layers * k / count)) for k in range(1, count + 1)})


@dataclass(frozen=True)
class LayerChoice:
    layer: int
    scores: dict[int, dict[str, float]]  # layer -> task -> select score of its sweep heads

    def mean(self, layer: int) -> float:
        return sum(self.scores[layer].values()) / len(self.scores[layer])


def choose_layer(tasks: list[str], fit, fit_x: LayerFeatures, select, select_x: LayerFeatures,
                 config: HeadTrainConfig = HeadTrainConfig()) -> LayerChoice:
    """The layer of `fit_x` (its keys) whose short-trained heads score best on the select
    sentences, averaged over `tasks`. fit/select: CoNLL sentences (their `.tags[task]`)."""
    sweep = replace(config, steps=min(config.steps, SWEEP_STEPS), eval_every=min(config.eval_every, SWEEP_STEPS))
    scores: dict[int, dict[str, float]] = {}
    for layer in progress(sorted(fit_x), "layer sweep", unit="layer"):
        scores[layer] = {task: train_head(task, fit_x[layer], [s.tags[task] for s in fit], select_x[layer],
                                          [s.tags[task] for s in select], sweep).score
                         for task in tasks}
    choice = LayerChoice(0, scores)
    best = max(scores, key=lambda layer: (choice.mean(layer), -layer))
    return LayerChoice(best, scores)
