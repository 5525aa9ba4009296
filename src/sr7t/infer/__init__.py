"""Inference-only cohorts: a study's 1.5T scans without 7T partners, super-resolved with a
model trained elsewhere and written as BIDS derivatives.

- :mod:`sr7t.infer.source`: where a cohort's model comes from (another cohort's results, a
  bundle file, an MLflow registered model), checked when the workflow starts, and fetched.
- :mod:`sr7t.infer.bids`: BIDS derivative names, the JSON sidecar and
  ``dataset_description.json``.

The per-scan steps are those of ``sr7t predict`` (:mod:`sr7t.predict`: N4 as the model's own
training data, GNL guidance on the output grid, sampling in the scan's world space); the
workflow runs them as separate jobs so a new subject plans only its own.
"""
