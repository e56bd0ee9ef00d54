"""Lecture 06: adversarial examples. FGSM, PGD, adversarial training, universal patches.

Training changes the model to lower the loss on the data; an attack changes the data to
raise the loss of a fixed model, by projected gradient ascent on the input. Every attack
here takes a ``classifier``: any callable mapping images (B, C, H, W) in [0, 1] to logits
(B, n_classes), such as an ``nn.Module`` or ``classifier(model, row)`` for a row of the
client matrix. Adversarial training (the min-max of Madry et al. 2018, arXiv:1706.06083) runs on one row.
"""
from .attacks import (
    NORMS, Attack, Classifier, accuracy, classifier, fgsm, input_gradient, minimal_epsilon, pgd, pgd_step,
    project, robust_accuracy, transfer_rate,
)  # fmt: skip
from .patch import apply_patch, patch_success, random_positions, universal_patch
from .training import adversarial_epoch, adversarial_training, small_cnn
from .widget import AttackGrid, attack_grid, plot_attack

__all__ = [
    "NORMS", "Attack", "AttackGrid", "Classifier", "accuracy", "adversarial_epoch", "adversarial_training",
    "apply_patch", "attack_grid", "classifier", "fgsm", "input_gradient", "minimal_epsilon", "patch_success",
    "pgd", "pgd_step", "plot_attack", "project", "random_positions", "robust_accuracy", "small_cnn",
    "transfer_rate", "universal_patch",
]
