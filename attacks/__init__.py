"""Membership-inference and adversarial attacks used by the audit.

One concern per module: ``signals`` (per-example scores from logits), ``stats``
(ROC, AUC, TPR at low FPR, bootstrap intervals), ``population`` (attacks without
extra models), ``reference`` (LiRA, RMIA, U-LiRA over reference models), ``paired``
(the single-reference test against a retrained model), ``label_only`` (ART).

Adversarial robustness: ``spec`` (what an attack is), ``pgd`` (our FGSM / PGD), ``threat``
(per-data-family eps, step, steps), ``backends`` (native, torchattacks, ART), ``robust``
(robust accuracy, the guarded entry point), ``random_search`` (a gradient-free attack) and
``masking`` (gradient-masking checks); ``adversarial`` re-exports them under one name.
"""
