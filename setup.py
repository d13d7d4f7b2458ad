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


packages, package_dir = _stage_packages()
packages.append("objcrop.eval_configs")
package_dir["objcrop.eval_configs"] = "eval_configs"

setup(
    name="objcrop",
    version="0.1.0",
    description="Benchmark suite for self-supervised pretraining with object-aware cropping",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"objcrop.eval_configs": _config_files()},
    include_package_data=True,
    entry_points={"console_scripts": ["objcrop = objcrop.cli:main"]},
)
