"""The run machinery a project normally leaves alone (it changes ``data/``, ``models.py``, ``tasks/``,
``configs/``): command line, seeded loading, callbacks, dashboards, hardware, export, tuning."""
