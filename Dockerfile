# syntax=docker/dockerfile:1
# The fencekeeper image: one image for every role (storage, node, workload, migrate, cluster init); the
# command picks the role and FENCEKEEPER_* variables configure it (docs/configuration.md). compose.yaml
# builds it; by hand: `docker build -t fencekeeper .`

# Build stage: the project, from this source tree, and every dependency as wheels. Anything that has to
# be compiled is compiled here, and none of this stage reaches the final image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY storage_service ./storage_service
COPY elector ./elector
COPY fencekeeper ./fencekeeper
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: the wheels installed offline (no index: exactly what the build stage resolved), mounted
# rather than copied so that they leave no layer behind. No compiler, no source tree, no pip cache.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/fencekeeper fencekeeper \
    && mkdir /cluster /data \
    && chown fencekeeper:fencekeeper /cluster /data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels fencekeeper
# /cluster (cluster.toml and the keys) and /data (a voter's promises) are where compose mounts named
# volumes: an empty named volume takes the ownership of the directory it is mounted on, so this user can
# write them.
USER fencekeeper
WORKDIR /home/fencekeeper
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["fencekeeper"]
CMD ["--help"]
