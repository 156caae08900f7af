"""`itsacat deploy`: ship the model the pipeline produced to a local endpoint, Lambda or SageMaker.

No retraining: every target takes `model/` as it is, smoke-tests the new version with real
photos before it takes traffic, and leaves the previous version serving when anything fails.

    itsacat deploy                        # deploy.target from params.yaml (default: local)
    itsacat deploy --target sagemaker     # blue/green endpoint update, rollback on a bad smoke test
    itsacat endpoint status | stop        # what is live (local: stop the proxy and backends)

Modules: `common` (results, errors, digests), `smoke` (the smoke test), `local` and `proxy`
(blue/green on one machine), `sagemaker`, `lambda_`, `cli`.
"""
