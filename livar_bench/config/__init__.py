"""Validated experiment settings (``RunSpec``) and their identity.

- ``spec``: the RunSpec model, its fields and field validators;
- ``checks``: cross-field checks that read methods, data and models (one error line each);
- ``identity``: what a run id and a partition id hash;
- ``loading``: validation errors as one line each, YAML configs (``load_yaml``); ``make_spec`` (in
  ``spec``) builds a RunSpec from user input with those lines.

Everything is importable from ``livar_bench.config`` as before the split.
"""

from livar_bench.config.identity import HEAD_INIT, NON_IDENTITY_FIELDS
from livar_bench.config.loading import format_validation_error, load_yaml
from livar_bench.config.spec import MAX_LR, RunSpec, make_spec

__all__ = ["HEAD_INIT", "MAX_LR", "NON_IDENTITY_FIELDS", "RunSpec", "format_validation_error", "load_yaml",
           "make_spec"]
