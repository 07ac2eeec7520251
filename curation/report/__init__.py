"""The quality report (HTML) and the data validation suites (Great Expectations)."""
