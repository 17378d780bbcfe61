"""Online scoring script for a real-time endpoint: ``init()`` loads the model, ``run(data)`` predicts.

The same file runs unchanged in Azure's inference containers and in the local deployment: both serve it
with azureml-inference-server-http. The request is ``{"data": [{<raw column>: value, ...}, ...]}`` (the
model's raw input columns, without the label) and the answer ``{"result": [<one prediction per row>]}``.

``run`` is decorated with inference-schema, so ``/swagger.json`` documents every column with its type,
the required columns and an example, all built from the registered MLflow model's signature and input
example (a sample of the training data's raw columns). Decoding is done here, not by inference-schema's
``PandasParameterType`` (a JSON round trip through ``pd.read_json`` that costs more than the model's
``predict`` and turns bad input into HTTP 500): one pass over the rows checks the columns and value
types and builds typed columns, and bad input becomes HTTP 400 with a message naming the field. The
rule (types, and dates as the model learned them) is ``input_rules.py``'s, which batch scoring
(``scoring.py``) applies to its mini-batches too.

The model is found with ``Model.get_model_path(name)``; the name comes from ``AMLOPS_MODEL_NAME`` or,
failing that, from ``AZUREML_MODEL_DIR`` (``.../azureml-models/<name>/<version>``).

Loaded by the server with ``spec_from_file_location`` (not put in ``sys.modules``), so it does not use
``from __future__ import annotations`` (dataclasses need their module registered to read string hints).
"""

import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from inference_schema.parameter_types.abstract_parameter_type import AbstractParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.schema_util import get_input_schema

_HERE = os.path.dirname(os.path.abspath(__file__))
if (
    _HERE not in sys.path
):  # Azure puts the source directory on sys.path; a server or test loading the file may not
    sys.path.append(_HERE)
from input_rules import (  # noqa: E402 - the model's input rule, shared with batch scoring (scoring.py)
    INT64_MAX,
    INT64_MIN,
    KINDS,
    Column,
    InputError,
    check_frame,
    date_checker,
    kind_of,
)

try:  # the response class of the server Azure's images run (azureml-inference-server-http)
    from azureml_inference_server_http.api.aml_response import AMLResponse
except ImportError:  # pragma: no cover - older images ship it as azureml.contrib.services
    from azureml.contrib.services.aml_response import AMLResponse

INPUT_NAME = "data"


@dataclass(frozen=True)
class InputSchema:
    """What ``run`` accepts: the model's columns in order, and example rows for the swagger."""

    columns: tuple[Column, ...]
    example: list[dict[str, Any]]
    output_example: Any = 0.0
    patterns: dict[str, str] = field(default_factory=dict)  # text columns' regular expressions (dates)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def model_name() -> str:
    """The registered model's name: ``AMLOPS_MODEL_NAME``, else read from ``AZUREML_MODEL_DIR``."""
    name = os.environ.get("AMLOPS_MODEL_NAME")
    if name:
        return name
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("no model to serve: set AZUREML_MODEL_DIR (and AMLOPS_MODEL_NAME)")
    return Path(model_dir).parent.name


def model_path() -> str:
    """The MLflow model folder: ``Model.get_model_path(name)``, else the one entry in ``AZUREML_MODEL_DIR``.

    (The SDK reads ``AML_APP_ROOT`` once, when ``azureml.core.model`` is first imported; a process that
    imported it earlier still finds the model through ``AZUREML_MODEL_DIR``.)
    """
    from azureml.core.model import Model
    from azureml.exceptions import ModelNotFoundException, WebserviceException

    try:
        return Model.get_model_path(model_name())
    except (ModelNotFoundException, WebserviceException):
        model_dir = Path(os.environ.get("AZUREML_MODEL_DIR") or ".")
        entries = list(model_dir.iterdir()) if model_dir.is_dir() else []
        if len(entries) != 1:
            raise
        return str(entries[0])


def read_input_schema(path: str | os.PathLike[str]) -> InputSchema:
    """The input schema of an MLflow model folder, from its signature and input example (no model load)."""
    from mlflow.models import Model as MlflowModel

    meta = MlflowModel.load(str(path))
    example = meta.load_input_example(str(path))
    if not isinstance(example, pd.DataFrame):
        example = pd.DataFrame(example) if example is not None else None
    signature = meta.signature
    if signature is not None and signature.inputs.has_input_names():
        columns = tuple(Column(spec.name, kind_of(str(spec.type))) for spec in signature.inputs.inputs)
    elif example is not None:
        columns = tuple(Column(str(c), _kind_of_dtype(example[c].dtype)) for c in example.columns)
    else:
        raise RuntimeError(f"model at {path} has neither a column signature nor an input example")
    rows = _example_rows(example, columns)
    output_example: Any = 0.0
    if signature is not None and signature.outputs is not None:
        output_type = json.dumps(signature.outputs.to_dict())
        if '"string"' in output_type or '"str"' in output_type:
            output_example = ""
        elif "int" in output_type and "float" not in output_type and "double" not in output_type:
            output_example = 0
    dates = (meta.metadata or {}).get("date_columns") or {}  # written by the model's register step
    patterns = {name: spec["pattern"] for name, spec in dates.items() if spec.get("pattern")}
    return InputSchema(columns=columns, example=rows, output_example=output_example, patterns=patterns)


def decode(data: Any, schema: InputSchema) -> pd.DataFrame:
    """Check ``data`` (a list of row objects) against ``schema`` and build the model's input frame.

    Raises InputError naming the first offending field. Costs one pass over the values per column.
    """
    if isinstance(data, pd.DataFrame):
        return _check_frame(data, schema)
    if not isinstance(data, list):
        raise InputError(f"{INPUT_NAME}: expected a list of rows (objects), got {_json_type_name(data)}")
    if not data:
        raise InputError(f"{INPUT_NAME}: expected at least one row, got an empty list")
    names = schema.names
    wanted = set(names)
    for i, row in enumerate(data):
        if type(row) is not dict:
            raise InputError(f"{INPUT_NAME}[{i}]: expected an object of columns, got {_json_type_name(row)}")
        if row.keys() != wanted:
            _raise_column_mismatch(i, row, names)
    out: dict[str, np.ndarray] = {}
    for column in schema.columns:
        values = [row[column.name] for row in data]
        out[column.name] = _column_array(values, column)
    return pd.DataFrame(out, copy=False)  # columns in schema order; no columns= (a reindex costing 3x more)


def predictions_to_list(predictions: Any) -> list[Any]:
    """Model output as a JSON-ready list (one item per input row)."""
    if isinstance(predictions, pd.DataFrame):
        predictions = predictions.iloc[:, 0] if predictions.shape[1] == 1 else predictions
    return np.asarray(predictions).tolist()


class RecordsParameterType(AbstractParameterType):
    """Swagger for a list of row objects with typed, required columns; decoding is done by ``decode``.

    ``deserialize_input`` passes the JSON through untouched: decoding in ``run`` lets bad input become a
    400 (inference-schema's own conversion errors surface as 500s from the server).
    """

    def __init__(self, schema: InputSchema) -> None:
        super().__init__(schema.example)
        self.schema = schema
        self.sample_data_type = RecordsParameterType  # never isinstance-matched: always passed through

    def deserialize_input(self, input_data: Any) -> Any:
        return input_data

    def input_to_swagger(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for column in self.schema.columns:
            json_type, fmt, _ = KINDS[column.kind]
            prop: dict[str, Any] = {"type": json_type}
            if fmt:
                prop["format"] = fmt
            if column.name in self.schema.patterns:
                prop["pattern"] = self.schema.patterns[column.name]
            if column.kind in ("integer", "long"):
                prop["minimum"], prop["maximum"] = INT64_MIN, INT64_MAX
            properties[column.name] = prop
        return {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": properties,
                "required": self.schema.names,
                "additionalProperties": False,
            },
            "example": self.schema.example,
            "format": "pandas.DataFrame:records",
        }


def _kind_of_dtype(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "long"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def _example_rows(example: pd.DataFrame | None, columns: tuple[Column, ...]) -> list[dict[str, Any]]:
    if example is None or example.empty:
        filler = {"integer": 0, "long": 0, "float": 0.0, "double": 0.0, "boolean": False}
        return [{c.name: filler.get(c.kind, "") for c in columns}]
    rows = json.loads(example.head(2).to_json(orient="records", date_format="iso"))
    for row in rows:
        for c in columns:
            if c.json_type == "number" and isinstance(row.get(c.name), int):
                row[c.name] = float(row[c.name])
    return rows


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _raise_column_mismatch(i: int, row: dict[str, Any], names: list[str]) -> None:
    missing = [n for n in names if n not in row]
    extra = sorted(str(k) for k in row if k not in set(names))
    if missing:
        raise InputError(f"{INPUT_NAME}[{i}]: missing column(s) {', '.join(map(repr, missing))}")
    raise InputError(
        f"{INPUT_NAME}[{i}]: unknown column(s) {', '.join(map(repr, extra))}; the model takes: {', '.join(names)}"
    )


def _column_array(values: list[Any], column: Column) -> np.ndarray:
    kind = column.kind
    types = set(map(type, values))
    if kind in ("integer", "long"):
        if not types <= {int}:
            if types <= {int, float} and all(float(v).is_integer() for v in values):
                values = [int(v) for v in values]
            else:
                _raise_bad_value(values, column, lambda v: type(v) is int, "an integer")
        if min(values) < INT64_MIN or max(values) > INT64_MAX:
            _raise_bad_value(values, column, lambda v: INT64_MIN <= v <= INT64_MAX, "a 64-bit integer")
        return np.array(values, dtype=np.int64)
    if kind in ("float", "double"):
        if not types <= {int, float}:
            _raise_bad_value(values, column, lambda v: type(v) in (int, float), "a number")
        array = np.array(values, dtype=np.float64)
        if not np.isfinite(array).all():
            _raise_bad_value(values, column, lambda v: math.isfinite(v), "a finite number")
        return array
    if kind == "boolean":
        if not types <= {bool}:
            _raise_bad_value(values, column, lambda v: type(v) is bool, "true or false")
        return np.array(values, dtype=np.bool_)
    if not types <= {str}:
        _raise_bad_value(values, column, lambda v: type(v) is str, "a string")
    if kind == "datetime":
        try:
            return pd.to_datetime(pd.Series(values), format="ISO8601").to_numpy()
        except (ValueError, OverflowError):
            _raise_bad_value(values, column, _is_iso_datetime, "an ISO 8601 date-time")
    return np.array(values, dtype=object)


def _is_iso_datetime(value: str) -> bool:
    try:
        pd.to_datetime(value, format="ISO8601")
    except (ValueError, OverflowError):
        return False
    return True


def _raise_bad_value(values: list[Any], column: Column, ok: Any, expected: str) -> None:
    for i, value in enumerate(values):
        try:
            good = ok(value)
        except (TypeError, ValueError, OverflowError):
            good = False
        if not good:
            shown = (
                json.dumps(value)[:40] if not isinstance(value, float) or math.isfinite(value) else str(value)
            )
            raise InputError(
                f"{INPUT_NAME}[{i}].{column.name}: expected {expected}, got {_json_type_name(value)} {shown}"
            )
    raise InputError(f"{INPUT_NAME}: column {column.name!r} holds values that are not {expected}")


def _check_frame(frame: pd.DataFrame, schema: InputSchema) -> pd.DataFrame:
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise InputError(f"{INPUT_NAME}: missing column(s) {', '.join(map(repr, missing))}")
    if frame.empty:
        raise InputError(f"{INPUT_NAME}: expected at least one row, got none")
    try:
        _, typed, bad = check_frame(frame, schema.columns)
    except InputError as exc:
        raise InputError(f"{INPUT_NAME}: {exc}") from None
    if bad:
        raise InputError(f"{INPUT_NAME}[{bad[0].row}].{bad[0].column}: {bad[0].problem}")
    return typed


def _bad_request(message: str) -> AMLResponse:
    return AMLResponse({"message": message}, 400, json_str=True)


def direct_predictor(
    model: Any, path: str | os.PathLike[str], schema: InputSchema
) -> Callable[[pd.DataFrame], Any]:
    """``model.predict``, or, for a PythonModel pyfunc, its own ``predict`` without MLflow's schema check.

    ``decode`` has already enforced the model's signature (columns, order, types), so MLflow's second
    enforcement (about a fifth of a 2-row predict) is skipped; used only if it gives the same answer on
    the input example, else ``model.predict`` is kept.
    """
    from mlflow.models import Model as MlflowModel
    from mlflow.pyfunc import PythonModelContext

    try:
        python_model = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - not a PythonModel pyfunc: keep MLflow's predict
        return model.predict
    if list(inspect.signature(python_model.predict).parameters)[:2] != ["context", "model_input"]:
        return model.predict
    flavor = MlflowModel.load(str(path)).flavors.get("python_function", {})
    artifacts = {
        name: os.path.join(str(path), spec["path"]) for name, spec in (flavor.get("artifacts") or {}).items()
    }
    context = PythonModelContext(artifacts=artifacts, model_config=model.model_config)

    def direct(frame: pd.DataFrame) -> Any:
        return python_model.predict(context, frame)

    sample = decode(schema.example, schema)
    try:
        same = predictions_to_list(direct(sample)) == predictions_to_list(model.predict(sample))
    except Exception:  # noqa: BLE001 - any doubt: keep MLflow's predict
        same = False
    return direct if same else model.predict


def check_dates(frame: pd.DataFrame, schema: InputSchema) -> None:
    """InputError naming the first value in a date column that is not a date as the model learned them
    (the model would otherwise predict from a missing date)."""
    found = bad_date(frame) if bad_date is not None else None
    if found is not None:
        i, column = found
        example = schema.example[0].get(column) if schema.example else None
        raise InputError(
            f"{INPUT_NAME}[{i}].{column}: expected a date{f' like {example!r}' if example else ''},"
            f" got {json.dumps(frame[column].iloc[i], default=str)}"
        )


SCHEMA = read_input_schema(model_path())
model: Any = None
predict: Callable[[pd.DataFrame], Any] | None = None
bad_date: Callable[[pd.DataFrame], tuple[int, str] | None] | None = None


def init() -> None:
    """Load the registered model once per worker process."""
    global model, predict, bad_date
    import mlflow

    path = model_path()
    model = mlflow.pyfunc.load_model(path)
    predict = direct_predictor(model, path, SCHEMA)
    bad_date = date_checker(model)


@input_schema(INPUT_NAME, RecordsParameterType(SCHEMA))
@output_schema(StandardPythonParameterType({"result": [SCHEMA.output_example]}))
def run(data: Any) -> Any:
    """Predict for the posted rows: ``{"result": [...]}``, or a 400 response naming the bad field."""
    try:
        frame = decode(data, SCHEMA)
        check_dates(frame, SCHEMA)
    except InputError as exc:
        return _bad_request(str(exc))
    return {"result": predictions_to_list(predict(frame))}


# inference-schema cannot mark a parameter as required; the swagger should say "data" is.
get_input_schema(run).setdefault("required", [INPUT_NAME])
