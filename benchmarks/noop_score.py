"""A scoring script that does no work: what the serving stack alone costs (benchmarks/serving.py).

Deployed like scoring/score.py (same gunicorn workers, key check and azureml-inference-server-http),
its ``run`` answers every request with two zeros without reading the body, so the throughput measured
against it is the most any ``run()`` can have on that stack and machine.
"""


def init():
    pass


def run(raw_data):
    return {"result": [0.0, 0.0]}
