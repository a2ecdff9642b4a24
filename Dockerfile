# sppdet in a container: CUDA runtime base, sppdet installed with the pinned constraints.
#   docker build -t sppdet .
#   docker run --gpus all -v "$PWD/data:/data" -v "$PWD/work:/work" sppdet demo
# The torch wheel pinned in constraints.txt (2.14.1, CUDA 13 build) brings its own CUDA
# libraries; the base image supplies the driver-facing runtime and cuDNN.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_MAX_=0 \
    SPPDET_WORK_DIR=/work

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/sppdet
ENV PATH=/opt/sppdet/bin:$PATH

WORKDIR /src
COPY constraints.txt setup.cfg pyproject.toml README.md ./
COPY sppdet ./sppdet
COPY cli ./cli
COPY stages ./stages
RUN pip install -c constraints.txt .

RUN useradd --create-home --uid 10001 sppdet \
 && mkdir -p /data /work \
 && chown sppdet:sppdet /data /work
VOLUME ["/data", "/work"]
WORKDIR /work
USER sppdet

ENTRYPOINT ["sppdet"]
CMD ["--help"]
