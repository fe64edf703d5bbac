"""BUILD must list every module and every test file of the tree.

Bazel cannot run offline here (no rules can be fetched), so this test stands in
for `bazel test`: it parses BUILD and fails when a module or a test file is
missing from it, or when BUILD names a file that does not exist.
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_calls():
    with open(os.path.join(ROOT, "BUILD")) as f:
        tree = ast.parse(f.read(), filename="BUILD")
    calls = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            kwargs = {
                kw.arg: ast.literal_eval(kw.value)
                for kw in call.keywords
                if kw.arg in ("name", "srcs", "main")
            }
            calls.append((call.func.id, kwargs))
    return calls


def _tracked_python_files(directory):
    found = set()
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, directory)):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
        found.update(
            os.path.relpath(os.path.join(dirpath, f), ROOT)
            for f in filenames
            if f.endswith(".py")
        )
    return found


def test_every_module_is_in_a_py_library():
    library_srcs = set()
    for rule, kwargs in _build_calls():
        if rule == "py_library":
            library_srcs.update(kwargs["srcs"])
    missing = sorted(_tracked_python_files("kfac") - library_srcs)
    assert not missing, "modules missing from BUILD py_library srcs: {}".format(missing)


def test_every_test_file_has_a_py_test():
    py_tests = {
        kwargs["srcs"][0] for rule, kwargs in _build_calls() if rule == "py_test"
    }
    test_files = {
        p
        for p in _tracked_python_files("tests")
        if os.path.basename(p).startswith("test_")
    }
    missing = sorted(test_files - py_tests)
    assert not missing, "test files without a py_test in BUILD: {}".format(missing)


def test_build_names_only_existing_files():
    named = set()
    for _, kwargs in _build_calls():
        named.update(kwargs.get("srcs", []))
    absent = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p)))
    assert not absent, "BUILD names files that do not exist: {}".format(absent)


def test_build_matches_generator():
    generated = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "gen_build.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with open(os.path.join(ROOT, "BUILD")) as f:
        assert f.read() == generated, "BUILD is stale: run `make build-file`"
