# twin-server: a slim image running as a non-root user, state in a volume.
#   docker build -t twin-server .
#   docker run --rm -p 4840:4840 -v twin-server-state:/var/lib/twin-server twin-server
# Real-time scheduling of the worker processes (server.worker_scheduling =
# "realtime", the default) needs the limit or the capability; without either
# the workers run at normal priority and the log says so once
# (worker_scheduling_fallback):
#   docker run --rm --ulimit rtprio=10 -p 4840:4840 -v twin-server-state:/var/lib/twin-server twin-server
# (or --cap-add SYS_NICE; on a cgroup v1 host whose kernel has RT group scheduling,
# also --cpu-rt-runtime=950000, with dockerd's --cpu-rt-runtime set)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY twin_server ./twin_server
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/twin-server --create-home twin
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs /etc/twin-server
USER twin
WORKDIR /var/lib/twin-server
VOLUME ["/var/lib/twin-server"]
EXPOSE 4840
ENV STATE_DIRECTORY=/var/lib/twin-server
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["twin-server", "health", "opc.tcp://127.0.0.1:4840/twin-server", "--timeout", "5"]
ENTRYPOINT ["twin-server"]
CMD ["run", "/etc/twin-server/demo.toml", "--endpoint", "opc.tcp://0.0.0.0:4840/twin-server"]
