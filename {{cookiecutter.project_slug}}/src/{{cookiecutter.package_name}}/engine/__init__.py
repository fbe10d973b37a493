"""The run machinery: command line, seeded data loading, callbacks, dashboards, hardware, export, tuning.

A project normally leaves this package alone and changes ``data/``, ``models.py``, ``tasks/``
and ``configs/``; every guarantee of a run (seeding, exact resume, clean stops, several processes)
lives here, in one place.
"""
