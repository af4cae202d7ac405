"""The one compiled part: the email and number passes of capture redaction (gateway/_redaction.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
install still succeeds and `gateway.redaction` falls back to its regex passes (same rules,
slower on dense input; logged at import). `make install` provides the compiler.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gateway._redaction", ["gateway/_redaction.c"], optional=True)])
