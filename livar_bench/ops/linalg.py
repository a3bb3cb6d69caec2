"""A thin SVD that does not stop a run on an ill-conditioned matrix.

``torch.linalg.svd`` on the CPU calls LAPACK's divide-and-conquer ``gesdd``, which can fail to converge on
ill-conditioned inputs or ones with many repeated singular values (it raised on an Iso-C merge of ten
digits clients at alpha 1 in this project's baselines study). LAPACK's QR-iteration ``gesvd`` is slower
but converges on those inputs; torch exposes the driver choice only on CUDA, so the fallback goes through
SciPy's ``scipy.linalg.svd(..., lapack_driver="gesvd")``. Inputs on which ``gesdd`` converges get
exactly torch's result, so no number changes where the old code worked.
"""

from __future__ import annotations

import torch
from torch import Tensor


def svd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reduced SVD ``(U, S, Vh)`` of a 2-D ``x`` (``full_matrices=False``), same dtype and device as ``x``.

    Tries ``torch.linalg.svd`` first; if LAPACK does not converge, recomputes with ``gesvd`` on the host.
    """
    try:
        return torch.linalg.svd(x, full_matrices=False)
    except torch.linalg.LinAlgError:
        import scipy.linalg

        u, s, vh = scipy.linalg.svd(x.detach().cpu().numpy(), full_matrices=False, lapack_driver="gesvd",
                                    check_finite=True)
        return tuple(torch.from_numpy(m).to(device=x.device, dtype=x.dtype) for m in (u, s, vh))
