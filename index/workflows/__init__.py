"""The application layer of the index: what turns photos, folders and model files into the
engine's vectors and back: ``collection`` (photos in and answers out), ``models`` and
``imaging`` (model loading, the one intake), ``doctor`` (store check), and one sub-package per
kind of job: ``ray/`` (Ray jobs), ``evaluation/`` and ``audit/`` (reports). ``index`` proper
below it is numpy + FAISS + LanceDB only (tests/test_structure.py checks it); see
docs/CONTRACTS.md."""
