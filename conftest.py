"""Root conftest: lets `tests/` import `tests.conftest` helpers; integration options arrive with integration/."""
