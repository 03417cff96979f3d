"""Audit of a labelled collection before it is enrolled or trained on (``shellid audit``):
exact and near duplicates, likely mislabels, off-domain images, outliers, unusable files and
species with too few images. Reads only; see docs/evaluation.md."""

from .findings import CSV_COLUMNS, KINDS, SEVERITIES, Finding, read_csv, write_csv
from .report import write_audit_report
from .runner import AuditConfig, AuditResult, audit_collection

__all__ = [
    "CSV_COLUMNS",
    "KINDS",
    "SEVERITIES",
    "AuditConfig",
    "AuditResult",
    "Finding",
    "audit_collection",
    "read_csv",
    "write_audit_report",
    "write_csv",
]
