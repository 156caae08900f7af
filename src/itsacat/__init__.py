"""itsacat: a from-scratch numpy network that tells cats from non-cats, delivered with DVC,
GitHub Actions and AWS. See README.md; the command line is `itsacat --help`."""

__version__ = "0.1.0"
