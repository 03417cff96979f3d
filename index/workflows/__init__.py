"""The application layer of the index: what turns photos, folders and model files into the
engine's vectors and back (intake, model loading, progress, distributed jobs, evaluation and
audit reports). ``index`` proper below it is numpy + FAISS + LanceDB only; see
docs/CONTRACTS.md."""
