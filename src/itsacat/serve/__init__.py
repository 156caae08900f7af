"""Serving: one inference core (`itsacat.predict.Predictor`) behind every host.

    codec.py           request bodies → images, predictions → JSON; shared by every host
    app.py             the ASGI app: /ping, /invocations, the page at /
    server.py          `itsacat serve`: uvicorn worker processes around app.py
    page.py            the page a person uses (inline HTML/CSS/JS, nothing from the internet)
    lambda_handler.py  AWS Lambda (API Gateway REST/HTTP API, function URLs)
    sagemaker.py       model_fn/input_fn/predict_fn/output_fn for SageMaker's sklearn container
    package.py         `itsacat package`: model.tar.gz for SageMaker, the Lambda zip

Nothing here imports boto3: serving never needs AWS to run.
"""
