"""Tasks: what is learnt from the data, on one small base (``base.Task``); chosen with ``model.class_path``.

``Classification`` and ``Regression`` ship; a third task is one file beside them: a ``Task``
subclass that says its metrics, its loss and, where they differ from the base's, its predictions
and dashboards. Any other ``LightningModule`` works at ``model.class_path`` too.
"""

from {{ cookiecutter.package_name }}.tasks.base import Task
from {{ cookiecutter.package_name }}.tasks.classification import Classification
from {{ cookiecutter.package_name }}.tasks.regression import Regression

__all__ = ["Classification", "Regression", "Task"]
