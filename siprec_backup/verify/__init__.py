"""Restore verification: prove that a backup set restores, check by check.

Import the parts from their modules (``verify.verifier``, ``verify.report``, ``verify.config``):
the catalog reads ``verify.report``, and the verifier reads the catalog.
"""
