# itsacat: one image for SageMaker bring-your-own-container training and serving.
#   docker build -t itsacat .
#   docker run -p 8080:8080 -v "$PWD/model:/opt/ml/model:ro" itsacat serve
# SageMaker runs `IMAGE serve` (model unpacked in /opt/ml/model, port 8080, /ping and
# /invocations) and `IMAGE train` (/opt/ml/input → /opt/ml/model). It stays root, as
# SageMaker's own framework images do, so it can write the volumes SageMaker mounts.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[serve]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels 'itsacat[serve]' && rm -rf /wheels
WORKDIR /opt/ml
EXPOSE 8080
# SIGTERM reaches the server directly (exec form, no shell): in-flight requests finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "itsacat.serve.container"]
CMD ["serve"]
