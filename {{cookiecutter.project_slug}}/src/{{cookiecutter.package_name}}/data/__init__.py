"""Your data: one ``SeededDataModule`` subclass per data set, chosen with ``data.class_path``."""

from {{ cookiecutter.package_name }}.data.diabetes import DiabetesDataModule
from {{ cookiecutter.package_name }}.data.digits import DigitsDataModule
from {{ cookiecutter.package_name }}.data.images import ImageFolderDataModule
from {{ cookiecutter.package_name }}.data.tables import CsvTableDataModule

__all__ = ["CsvTableDataModule", "DiabetesDataModule", "DigitsDataModule", "ImageFolderDataModule"]
