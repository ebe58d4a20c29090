"""Tests of the pure wire formats against protocols/vectors (a package, so its module names stay unique)."""
