"""Leave-domains-out: train and test on some domains, evaluate on the others (``test_heldout``).

The domain-generalisation protocol on DomainNet or ImageNet-R renditions: the held-out domains' images
leave the training set (no client ever sees them) and the test set; their test images become a split of
their own. The pooled ``test`` split is then the test images of the training domains.
"""

from __future__ import annotations

import dataclasses

import torch

from livar_bench.data.base import DatasetBundle, ImageSplit
from livar_bench.errors import BenchError


def _keep(split: ImageSplit, held: torch.Tensor, inside: bool) -> ImageSplit:
    mask = torch.isin(split.domains, held)
    return split.subset(torch.nonzero(mask if inside else ~mask).flatten())


def hold_out(bundle: DatasetBundle, names: tuple[str, ...]) -> DatasetBundle:
    """``bundle`` without the domains ``names`` in train and test, their test images as ``heldout_test``.

    Raises:
        BenchError: the dataset has no domains, a name is not one of its domains, or nothing is left to
            train on.
    """
    if not names:
        return bundle
    if bundle.domain_names is None or bundle.train.domains is None or bundle.test.domains is None:
        raise BenchError(f"--heldout-domains needs a dataset with domains (domainnet, domainnet10, imagenet-r, or an "
                         f"hf: dataset with a 'domain' column), but {bundle.name} has none")
    unknown = [n for n in names if n not in bundle.domain_names]
    if unknown:
        raise BenchError(f"--heldout-domains {','.join(unknown)}: {bundle.name} has no such domain; its domains: "
                         f"{', '.join(bundle.domain_names)}")
    if set(names) >= set(bundle.domain_names):
        raise BenchError(f"--heldout-domains {','.join(names)} holds out every domain of {bundle.name}; keep at least "
                         "one to train on")
    held = torch.tensor([bundle.domain_names.index(n) for n in names], dtype=torch.int64)
    train = _keep(bundle.train, held, inside=False)
    heldout = _keep(bundle.test, held, inside=True)
    if len(train) == 0 or len(heldout) == 0:
        raise BenchError(f"--heldout-domains {','.join(names)} leaves {len(train)} training and {len(heldout)} "
                         f"held-out test images of {bundle.name}; hold out other domains")
    return dataclasses.replace(bundle, train=train, test=_keep(bundle.test, held, inside=False),
                               heldout_test=heldout, heldout_domains=tuple(names))
