"""Tasks: what is learnt from the data, each a ``base.Task`` subclass chosen with ``model.class_path``."""

from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.classification import Classification
from {{ cookiecutter.package_name }}.tasks.regression import Regression

__all__ = ["Classification", "Regression", "Task"]
