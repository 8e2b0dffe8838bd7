"""Runbooks: one Markdown page per failure mode, from the experiment's runbook section and the
evidence of its last rehearsal, plus an index; templates ship inside this package.
"""
