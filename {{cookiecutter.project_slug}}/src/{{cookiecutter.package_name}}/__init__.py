"""{{ cookiecutter.package_name }}: training code for the project's models."""
