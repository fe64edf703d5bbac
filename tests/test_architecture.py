"""The layering the README's Architecture section describes holds in the tree."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = os.path.join(ROOT, "kfac", "ops")

# Imported by users and kfac/__init__.py; never by the private packages.
PUBLIC_MODULES = {"kfac"} | {
    "kfac.ops." + name
    for name in (
        "utils",
        "loss_functions",
        "fisher_factors",
        "fisher_blocks",
        "layer_collection",
        "estimator",
        "placement",
        "optimizer",
        "curvature_matrix_vector_products",
        "op_queue",
        "periodic_inv_cov_update_kfac_opt",
    )
}


def _private_modules():
    """Paths of every module of kfac/ops/_*/ and kfac/ops/_*.py."""
    for entry in sorted(os.listdir(OPS)):
        path = os.path.join(OPS, entry)
        if entry.startswith("_") and entry.endswith(".py") and entry != "__init__.py":
            yield path
        elif entry.startswith("_") and os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if name.endswith(".py"):
                    yield os.path.join(path, name)


def _imported_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:
                yield node.module + "." + alias.name


@pytest.mark.parametrize(
    "path", list(_private_modules()), ids=lambda path: os.path.relpath(path, OPS)
)
def test_private_modules_import_only_private_modules(path):
    public = sorted(set(_imported_modules(path)) & PUBLIC_MODULES)
    assert not public, "%s imports the public facade(s) %s" % (
        os.path.relpath(path, ROOT),
        public,
    )


def test_there_are_private_modules_to_check():
    assert len(list(_private_modules())) > 30
