"""Tests of `itsacat deploy` (local, SageMaker and Lambda targets) and the local proxy."""
