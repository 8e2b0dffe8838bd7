"""Outputs of a gate run, made from run journals: JUnit XML, Markdown and terminal summaries,
an HTML report with plots, and Prometheus alert rules from the SLO catalogue.

Every renderer is a pure function from journals to text; writing files happens at the edges.
"""
