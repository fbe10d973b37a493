"""Export a trained network: ``python export.py --ckpt_path CKPT --format onnx|torchscript|torch_export``.

``--output FILE`` names the file (default: the checkpoint's path with the format's suffix);
``--overwrite`` replaces an existing one. The checkpoint itself is never written over.
"""

from {{ cookiecutter.package_name }}.engine.export import main

if __name__ == "__main__":
    main()
