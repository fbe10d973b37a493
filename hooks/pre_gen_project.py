"""Refuses prompt values that cannot produce a working project, before anything is written.

Each check prints one line naming the prompt and what to do instead, then exits 1; cookiecutter
then removes the half-made output directory.
"""

import json
import keyword
import re
import sys

SUPPORTED_PYTHON = ("3.10", "3.11", "3.12", "3.13")
CHOICES = {
    "python_version": SUPPORTED_PYTHON,
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "none"),
    "ci": ("github-actions", "none"),
    "docker": ("none", "cpu", "cuda"),
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


def has_control_character(value: object) -> bool:
    return isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value)


def slug_problem(slug: str) -> str | None:
    if not slug.strip():
        return "project_slug is empty; give the repository a name"
    if "/" in slug or "\\" in slug or slug in {".", ".."}:
        return f"project_slug {slug!r} is a path, not a directory name; drop the separators"
    if not DISTRIBUTION_NAME.match(slug):
        return f"project_slug {slug!r} is not a distribution name; use letters, digits, '-', '_', '.'"
    return None


def package_problem(package: str) -> str | None:
    if not package.isidentifier() or not package.isascii():
        return f"package_name {package!r} is not a Python identifier; use ASCII letters, digits, '_'"
    if keyword.iskeyword(package):
        return f"package_name {package!r} is a Python keyword; choose another package_name"
    if package.lower() in TAKEN_NAMES or package in sys.stdlib_module_names:
        return f"package_name {package!r} would shadow an existing module; choose another package_name"
    return None


def problems(answers: dict[str, str]) -> list[str]:
    found = [
        f"{key} holds a control character; use plain text"
        for key, value in answers.items()
        if not key.startswith("_") and has_control_character(value)
    ]
    found += filter(None, [slug_problem(answers["project_slug"]), package_problem(answers["package_name"])])
    email = answers["author_email"]
    if email and not EMAIL.match(email):
        found.append(f"author_email {email!r} is not an email address; leave it empty or fix it")
    for key, allowed in CHOICES.items():
        if answers[key] not in allowed:
            found.append(f"{key} {answers[key]!r} is not supported; choose one of {', '.join(allowed)}")
    return found


def main(answers: dict[str, str]) -> int:
    errors = problems(answers)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}""")))
