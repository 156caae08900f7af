"""itsacat on AWS: the S3 DVC bucket, SageMaker training and tuning, notifications.

Everything here is an edge: boto3 is imported lazily, clients are created by the callers'
outermost layer (`itsacat.aws.clients.client`) and passed in, so tests point them at the
moto server through `AWS_ENDPOINT_URL`. Real AWS needs configuration only (params.yaml
`aws:`, the DVC remote in .dvc/config, credentials), never code changes.

    bootstrap.py   `itsacat aws bootstrap`: the versioned, encrypted, private bucket; IAM policies
    training.py    `train.compute: sagemaker`: run the train stage as a SageMaker training job
    sm_entry.py    the script-mode entry point that job runs (the SageMaker training contract)
    tuning.py      `itsacat tune`: a DVC experiment queue or a SageMaker tuning job
    notify.py      SNS / webhook notifications (training ended, deploy succeeded, rollback)
"""
