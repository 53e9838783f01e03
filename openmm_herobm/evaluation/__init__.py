"""Evaluation of backmapped structures (RMSD, geometry, chirality, cis peptides)."""

from openmm_herobm.evaluation.metrics import CHIRALITY_CHECKS, evaluate, evaluate_files, format_report

__all__ = ["CHIRALITY_CHECKS", "evaluate", "evaluate_files", "format_report"]
