"""The least a gunicorn deployment can cost: a WSGI app with no framework (benchmarks/serving.py).

Served by the same gunicorn, with the same sync workers, as a local deployment, it reads the request
body and answers two zeros as JSON, with no Flask, no inference server and no key check. Its throughput
bounds what any server under gunicorn can reach on the machine, whatever runs inside it.
"""

BODY = b'{"result": [0.0, 0.0]}'


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
