"""Thin DVC stage entry points: each `main()` reads its inputs, calls the core and writes
exactly the outputs `dvc.yaml` declares for it."""
