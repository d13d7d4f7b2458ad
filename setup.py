"""Distribution `objcrop`.

The top-level folders are the pipeline's stages; each is mapped into the
`objcrop` namespace (docs/ARCHITECTURE.md) so nothing generic such as
`convert` lands in site-packages.
"""
import os

from setuptools import find_packages, setup

STAGES = {
    "objcrop": "objcrop",
    "objcrop.pretrain": "pretrain",
    "objcrop.convert": "convert",
    "objcrop.detection": "detection",
    "objcrop.report": "report",
}


def _stage_packages():
    """Every package below each stage folder, named inside `objcrop`."""
    packages, package_dir = [], {}
    for namespace, folder in STAGES.items():
        packages.append(namespace)
        package_dir[namespace] = folder
        for sub in find_packages(folder):
            name = f"{namespace}.{sub}"
            packages.append(name)
            package_dir[name] = os.path.join(folder, *sub.split("."))
    return packages, package_dir


def _config_files():
    return [
        os.path.relpath(os.path.join(root, f), "eval_configs")
        for root, _, files in os.walk("eval_configs")
        for f in files
        if f.endswith((".yaml", ".yml"))
    ]


# Everything objcrop imports except what the user brings (torch, torchvision, detectron2: checked
# when a stage is imported, see objcrop/requirements.py), with the ranges the code works with.
# `make` installs requirements/pinned.txt instead and this package with --no-deps.
INSTALL_REQUIRES = [
    "numpy>=1.21",
    "fvcore>=0.1.5",           # CfgNode: every stage's config
    "iopath>=0.1.7",
    "pyyaml>=5.1",
    "pillow>=8",
    "tqdm>=4.50",
    "scipy>=1.7",
    "scikit-image>=0.19",
    "scikit-learn>=1.0",
    "matplotlib>=3.4",
    # contrib: selective search and the saliency proposals (a plain opencv-python must be uninstalled first)
    "opencv-contrib-python-headless>=4.5",
]
EXTRAS_REQUIRE = {
    "detection": ["pycocotools>=2.0.2"],      # plus detectron2 >= 0.6, which the user brings
    "slurm": ["submitit>=1.2"],               # `--launcher slurm`
    "study": ["tensorboard>=2.8", "imgviz>=1.2"],
    "dev": ["pytest>=7", "pytest-timeout>=2", "build"],
}
EXTRAS_REQUIRE["all"] = sorted({r for reqs in EXTRAS_REQUIRE.values() for r in reqs})

packages, package_dir = _stage_packages()
packages.append("objcrop.eval_configs")
package_dir["objcrop.eval_configs"] = "eval_configs"

setup(
    name="objcrop",
    version="0.1.0",
    description="Benchmark suite for self-supervised pretraining with object-aware cropping",
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    packages=packages,
    package_dir=package_dir,
    package_data={"objcrop.eval_configs": _config_files()},
    include_package_data=True,
    entry_points={"console_scripts": ["objcrop = objcrop.cli:main"]},
)
