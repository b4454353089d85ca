"""Validation reports for ML engineers: a model scored on a labelled dataset through
the serving path, its metrics with bootstrap confidence intervals (overall and per
subgroup), written as JSON and a self-contained HTML report beside the model.

`metrics` holds the numbers, `report` the data model (typed sections, so other
comparisons can be added), `evaluate` turns scored items and labels into a report,
`html` renders it and `store` writes it into the model's folder."""
