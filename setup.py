"""The compiled parts: the email and number passes of capture redaction (gateway/_redaction.c)
and the write-ahead log's group commit off the GIL (gateway/_group_commit.c).

Everything else is in pyproject.toml. Both extensions are optional: without a C compiler the
install still succeeds, `gateway.redaction` falls back to its regex passes (same rules, slower on
dense input) and `gateway.group_commit` to a Python thread (same guarantee, slower under load),
each logged. `make install` provides the compiler.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway._redaction", ["gateway/_redaction.c"], optional=True),
        Extension("gateway._group_commit", ["gateway/_group_commit.c"], optional=True),
    ]
)
