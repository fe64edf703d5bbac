"""Installs kfac: K-FAC for TensorFlow's tf.compat.v1 graph mode."""

import setuptools

setuptools.setup(
    name="kfac",
    version="0.1.0",
    description=(
        "Kronecker-Factored Approximate Curvature (K-FAC) for tf.compat.v1 "
        "graph mode: a port of tf.contrib.kfac."
    ),
    packages=setuptools.find_packages(include=["kfac", "kfac.*"]),
    python_requires=">=3.9",
    install_requires=["tensorflow>=2.13", "numpy", "absl-py"],
    extras_require={
        "tests": ["pytest", "pytest-randomly", "hypothesis"],
        "examples": ["matplotlib", "tensorboard"],
    },
)
