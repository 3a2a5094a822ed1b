"""Data quality: Great Expectations suites run as blocking Dagster asset checks (docs/data-quality.md).

``suites`` says what each lake table must satisfy, ``checks`` turns the suites into
Dagster checks and jobs, ``gate`` keeps downstream assets from writing over a failure.
"""
