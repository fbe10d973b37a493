"""Refuses prompt values that cannot produce a working project, before anything is written.

Each check prints one line naming the prompt and what to do instead, then exits 1; cookiecutter
then removes the half-made output directory.
"""

import json
import keyword
import re
import sys

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

SUPPORTED_PYTHON = ("3.10", "3.11", "3.12", "3.13")
CHOICES = {
    "python_version": SUPPORTED_PYTHON,
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "none"),
    "ci": ("github-actions", "none"),
}
# Import names the generated project, its tools or its tests already use: a package with one of
# these names would shadow the real one.
TAKEN_NAMES = {
    "conftest", "jsonargparse", "lightning", "lightning_fabric", "lightning_utilities", "numpy",
    "pytest", "pytorch_lightning", "rich", "ruff", "scipy", "setuptools", "sklearn", "tensorboard",
    "test", "tests", "torch", "torchmetrics", "torchvision", "train", "yaml",
}  # fmt: skip
# PEP 508 distribution names: letters, digits and . _ - inside, alphanumeric at both ends.
DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def problems(answers: dict[str, str]) -> list[str]:
    found = []
    for key, value in answers.items():
        if not key.startswith("_") and isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
            found.append(f"{key} holds a control character; use plain text")
    slug = answers["project_slug"]
    if not slug.strip():
        found.append("project_slug is empty; give the repository a name")
    elif "/" in slug or "\\" in slug or slug in {".", ".."}:
        found.append(f"project_slug {slug!r} is a path, not a directory name; drop the separators")
    elif not DISTRIBUTION_NAME.match(slug):
        found.append(f"project_slug {slug!r} is not a valid distribution name; use letters, digits, '-', '_', '.'")
    package = answers["package_name"]
    if not package.isidentifier() or not package.isascii():
        found.append(f"package_name {package!r} is not a valid Python identifier; use ASCII letters, digits, '_'")
    elif keyword.iskeyword(package):
        found.append(f"package_name {package!r} is a Python keyword; choose another package_name")
    elif package.lower() in TAKEN_NAMES or package in sys.stdlib_module_names:
        found.append(f"package_name {package!r} would shadow an existing module; choose another package_name")
    email = answers["author_email"]
    if email and not EMAIL.match(email):
        found.append(f"author_email {email!r} is not an email address; leave it empty or fix it")
    for key, allowed in CHOICES.items():
        if answers[key] not in allowed:
            found.append(f"{key} {answers[key]!r} is not supported; choose one of {', '.join(allowed)}")
    return found


if __name__ == "__main__":
    errors = problems(ANSWERS)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    sys.exit(1 if errors else 0)
