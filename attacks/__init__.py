"""Membership-inference and adversarial attacks used by the audit.

One concern per module: ``signals`` (per-example scores from logits), ``stats``
(ROC, AUC, TPR at low FPR, bootstrap intervals), ``population`` (attacks without
extra models), ``reference`` (LiRA, RMIA, U-LiRA over reference models), ``paired``
(the single-reference test against a retrained model), ``label_only`` (ART), and
``adversarial`` (robust accuracy under FGSM, PGD, AutoAttack).
"""
