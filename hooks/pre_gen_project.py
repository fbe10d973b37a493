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
# The distributions the generated project installs (pyproject.toml's dependencies and extras, and
# theirs) under their normalised names and their import names, lower case: a package or a
# distribution of the same name would shadow or replace one of them. tests/test_hooks.py checks
# that this holds every one installed; CUDA builds and other platforms add the last row.
DEPENDENCIES = {
    "absl", "absl_py", "aiohappyeyeballs", "aiohttp", "aiosignal", "alembic", "annotated_doc",
    "annotated_types", "arrow", "attr", "attrs", "binaryornot", "certifi", "cfgv", "charset_normalizer",
    "click", "cloudpickle", "colorlog", "contourpy", "cookiecutter", "cruft", "cycler", "dateutil", "distlib",
    "docstring_parser", "execnet", "filelock", "flatbuffers", "fonttools", "frozenlist", "fsspec",
    "functorch", "git", "gitdb", "gitpython", "google", "grpc", "grpcio", "identify", "idna", "iniconfig",
    "isympy", "jinja2", "joblib", "jsonargparse", "kiwisolver", "lightning", "lightning_fabric",
    "lightning_utilities", "mako", "markdown", "markdown_it", "markdown_it_py", "markupsafe", "matplotlib",
    "mdurl", "ml_dtypes", "mpl_toolkits", "mpmath", "multidict", "narwhals", "networkx", "nodeenv", "numpy",
    "onnx", "onnx_ir", "onnxruntime", "onnxscript", "optuna", "packaging", "pil", "pillow", "platformdirs",
    "pluggy", "pre_commit", "propcache", "protobuf", "py", "pydantic", "pydantic_core", "pygments", "pylab",
    "pyparsing", "pytest", "pytest_xdist", "python_dateutil", "python_discovery", "python_slugify",
    "pytorch_lightning", "pyyaml", "requests", "rich", "ruff", "scikit_learn", "scipy", "setuptools",
    "shellingham", "sklearn", "slugify", "smmap", "sqlalchemy", "sympy", "tensorboard",
    "tensorboard_data_server", "text_unidecode", "threadpoolctl", "torch", "torchgen", "torchmetrics", "tqdm",
    "typer", "typeshed_client", "typing_extensions", "typing_inspection", "tzdata", "urllib3", "virtualenv",
    "werkzeug", "xdist", "yaml", "yarl",
    "colorama", "greenlet", "nvidia", "torchvision", "triton",
}  # fmt: skip
# Modules of the project itself: its scripts (train.py, tune.py, export.py) and its tests.
PROJECT_MODULES = {"conftest", "export", "test", "tests", "train", "tune"}
# Keeps the template's longest import lines within ruff's 110 characters (one to spare);
# tests/test_hooks.py bakes a name this long.
MAX_PACKAGE_LENGTH = 30
# PEP 508 distribution names: letters, digits and . _ - inside, alphanumeric at both ends.
DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
LOWER_CASE_NAME = re.compile(r"^[a-z0-9_]+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def has_control_character(value: object) -> bool:
    return isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value)


def slug_problem(slug: str, package: str, name: str = "") -> str | None:
    if not any(c.isalnum() for c in slug):  # nothing to name a directory, a distribution, a package
        what = f"project_slug {slug!r} has no letter or digit" if slug.strip() else "project_slug is empty"
        if name and not any(c.isalnum() for c in name):  # the default slug: made from project_name
            return f"{what}, as project_name {name!r} has none; give a name with letters or digits"
        return f"{what}; give the repository a name"
    if "/" in slug or "\\" in slug or slug in {".", ".."}:
        return f"project_slug {slug!r} is a path, not a directory name; drop the separators"
    if not DISTRIBUTION_NAME.match(slug):
        return f"project_slug {slug!r} is not a distribution name; use letters, digits, '-', '_', '.'"
    name = re.sub(r"[-_.]+", "_", slug).lower()
    if name in DEPENDENCIES and name != package:  # else package_name's line says it
        return f"project_slug {slug!r} is a distribution the project uses; choose another project_slug"
    return None


def package_problem(package: str) -> str | None:
    if not package.isidentifier() or not package.isascii():
        return f"package_name {package!r} is not a Python identifier; use ASCII letters, digits, '_'"
    if keyword.iskeyword(package):
        return f"package_name {package!r} is a Python keyword; choose another package_name"
    if not LOWER_CASE_NAME.match(package):
        return f"package_name {package!r} has capitals, which ruff (N999) refuses; use {package.lower()!r}"
    if len(package) > MAX_PACKAGE_LENGTH:
        return f"package_name {package!r} is longer than {MAX_PACKAGE_LENGTH} characters; shorten it"
    if package in DEPENDENCIES | PROJECT_MODULES or package in sys.stdlib_module_names:
        return f"package_name {package!r} would shadow an existing module; choose another package_name"
    return None


def problems(answers: dict[str, str]) -> list[str]:
    found = [
        f"{key} holds a control character; use plain text"
        for key, value in answers.items()
        if not key.startswith("_") and has_control_character(value)
    ]
    slug, package = answers["project_slug"], answers["package_name"]
    about_slug = slug_problem(slug, package, answers.get("project_name", ""))
    # A package_name made from a bad project_slug (the default) is bad for the same reason: one line.
    made_from_slug = package == slug.replace("-", "_").replace(".", "_")
    found += filter(None, [about_slug, None if about_slug and made_from_slug else package_problem(package)])
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
