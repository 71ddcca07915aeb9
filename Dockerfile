# twin-server: a first working image (the operations work adds HEALTHCHECK and more).
#   docker build -t twin-server .
#   docker run --rm -p 4840:4840 -v twin-server-state:/var/lib/twin-server twin-server
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
ENTRYPOINT ["twin-server"]
CMD ["run", "/etc/twin-server/demo.toml", "--endpoint", "opc.tcp://0.0.0.0:4840/twin-server"]
