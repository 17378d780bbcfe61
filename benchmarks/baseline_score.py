"""The scoring script users deploy today (the benchmark's baseline): inference-schema's PandasParameterType.

``run(data)`` gets a DataFrame decoded by ``PandasParameterType`` (a ``json.dumps`` + ``pd.read_json`` +
``astype`` round trip) and returns ``{"result": [...]}``; bad input surfaces as HTTP 500. Served by
azureml-inference-server-http's defaults (one gunicorn worker) in benchmarks/serving.py.
"""

import os
from pathlib import Path

import mlflow
import numpy as np
from azureml.core.model import Model
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

MODEL_NAME = os.environ.get("AMLOPS_MODEL_NAME") or Path(os.environ["AZUREML_MODEL_DIR"]).parent.name
try:
    MODEL_PATH = Model.get_model_path(MODEL_NAME)
except Exception:  # the SDK read AML_APP_ROOT before (several models timed in one process)
    MODEL_PATH = os.path.join(os.environ["AZUREML_MODEL_DIR"], MODEL_NAME)
SAMPLE = mlflow.models.Model.load(MODEL_PATH).load_input_example(MODEL_PATH)
model = None


def init():
    global model
    model = mlflow.pyfunc.load_model(MODEL_PATH)


@input_schema("data", PandasParameterType(SAMPLE))
@output_schema(StandardPythonParameterType({"result": [0.0]}))
def run(data):
    return {"result": np.asarray(model.predict(data)).tolist()}
