"""Your data: one ``SeededDataModule`` subclass per data set, chosen with ``data.class_path``.

The examples: ``DigitsDataModule`` (the default, in memory), ``ImageFolderDataModule`` (image files
in one folder per class, read by DataLoader workers), ``CsvTableDataModule`` (a CSV table of
categorical and numeric columns) and ``DiabetesDataModule`` (regression on a table in memory).
"""

from {{ cookiecutter.package_name }}.data.diabetes import DiabetesDataModule
from {{ cookiecutter.package_name }}.data.digits import DigitsDataModule
from {{ cookiecutter.package_name }}.data.images import ImageFolderDataModule
from {{ cookiecutter.package_name }}.data.tables import CsvTableDataModule

__all__ = ["CsvTableDataModule", "DiabetesDataModule", "DigitsDataModule", "ImageFolderDataModule"]
