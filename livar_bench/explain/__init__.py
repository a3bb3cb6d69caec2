"""``livar-bench explain``: rebuild LIVAR's LoRA weighting table from SHAP attributions.

Stages, each usable on its own:

    collect.py    federated rounds with LIVAR's signals + a marginal-contribution probe per (client, module)
    surrogate.py  tree-ensemble surrogate of the outcome, held-out R^2, tree SHAP values
    rule.py       SHAP values -> LivarRule (base value + 3x3 bucket offsets, the paper's form)
    plots.py      beeswarm, dependence plots and the two rule tables side by side

``shap`` is imported only by surrogate.py and plots.py, inside functions.
"""
