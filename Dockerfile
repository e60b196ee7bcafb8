# aione-probe service image: `docker compose up` builds it (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY aione_probe ./aione_probe
RUN pip install ".[fleet]"
COPY probes ./probes
COPY examples ./examples
RUN useradd --system --uid 10001 --home-dir /data aione && mkdir -p /data && chown aione /data
USER aione
EXPOSE 9464
ENTRYPOINT ["aione-probe"]
CMD ["serve", "--config", "/etc/aione-probe/config.toml"]
