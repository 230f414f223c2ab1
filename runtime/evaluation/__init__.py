"""Measuring results against references: metrics, annotations, cohort evaluation, generated slides with known tumour, the demo."""
