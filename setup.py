from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "deepspeed", "matplotlib", "scipy", "gguf"))
]

setup(
    name="hass",
    version="0.1.0",
    description="Lossless speculative decoding with HASS / EAGLE-2 draft models over Hugging Face causal LMs",
    packages=find_packages(include=["hass", "hass.*"]),
    package_data={"hass": ["csrc/*.cpp"]},  # compiled on first use (hass.affine)
    python_requires=">=3.10",
    install_requires=requirements,
)
