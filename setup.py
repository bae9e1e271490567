"""keras-darts: Differentiable Architecture Search (Liu et al., ICLR 2019) in TensorFlow/Keras."""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "requirements.txt")) as f:
    requirements = [line.split("#")[0].strip() for line in f
                    if line.split("#")[0].strip() and not line.startswith("pytest")]

setup(
    name="keras-darts",
    version="0.1.0",
    description="DARTS architecture search, retraining and TF Serving export in TensorFlow/Keras",
    long_description=open(os.path.join(here, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_darts", "keras_darts.*"]),
    scripts=["bin/search", "bin/retrain", "bin/export", "bin/visualize"],
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5,<4"]},
    license="Apache-2.0",
)
