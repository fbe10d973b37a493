"""Export a trained network: ``python export.py --ckpt_path CKPT --format onnx|torchscript|torch_export``."""

from {{ cookiecutter.package_name }}.engine.export import main

if __name__ == "__main__":
    main()
