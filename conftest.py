"""Root conftest: the integration suite's plugin, for ``pytest integration/`` from a checkout.

Everything lives in :mod:`integration.plugin` so that a wheel install runs the
same suite (``kafkanet test`` passes ``-p integration.plugin``).
"""

pytest_plugins = ["integration.plugin"]
