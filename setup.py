"""The compiled parts: the email and number passes of capture redaction (gateway/_redaction.c),
the write-ahead log's group commit off the GIL (gateway/_group_commit.c) and its frames built in
place (gateway/_frames.c, linked with zlib for the CRC).

Everything else is in pyproject.toml. The extensions are optional: without a C compiler the
install still succeeds, `gateway.redaction` falls back to its regex passes (same rules, slower on
dense input), `gateway.group_commit` to a Python thread (same guarantee, slower under load) and
`gateway.spool` to building frames in Python (same bytes, one more copy), each logged.
`make install` provides the compiler and zlib's headers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway._redaction", ["gateway/_redaction.c"], optional=True),
        Extension("gateway._group_commit", ["gateway/_group_commit.c"], optional=True),
        Extension("gateway._frames", ["gateway/_frames.c"], libraries=["z"], optional=True),
    ]
)
