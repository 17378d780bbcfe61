"""What the SDK v2 reader and its node readers share: the YAML's vocabulary and the error they raise."""

from __future__ import annotations

import re
from typing import Any

from pipelines.core.plan import Arg, DataRef
from pipelines.errors import UserError

LITERAL_TYPES = ("string", "integer", "number", "boolean")
DATA_TYPES = ("uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model")
REFERENCE = re.compile(r"\$\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
OPTIONAL_BLOCK = re.compile(r"\$\[\[(.*?)\]\]", re.S)
ASSET_REF = re.compile(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+|@latest)")  # name:version, name@latest
PARENT_INPUT = re.compile(r"^parent\.inputs\.([A-Za-z0-9_]+)$")
PARENT_OUTPUT = re.compile(r"^parent\.jobs\.([A-Za-z0-9_]+)\.outputs\.([A-Za-z0-9_]+)$")
AUTOML_TASKS = {"regression": "regression", "classification": "classification", "forecasting": "forecasting"}
# AutoML primary metrics as azure-ai-ml's enums spell them -> as AutoMLConfig (and the local AutoML) does
PRIMARY_METRICS = {
    "NormalizedRootMeanSquaredError": "normalized_root_mean_squared_error",
    "NormalizedMeanAbsoluteError": "normalized_mean_absolute_error",
    "R2Score": "r2_score",
    "SpearmanCorrelation": "spearman_correlation",
    "Accuracy": "accuracy",
    "AUCWeighted": "AUC_weighted",
    "AveragePrecisionScoreWeighted": "average_precision_score_weighted",
    "PrecisionScoreWeighted": "precision_score_weighted",
    "NormMacroRecall": "norm_macro_recall",
}


class V2Error(UserError):
    """A v2 pipeline the local engine cannot run: one line naming the node and the field."""

    def __init__(self, node: str | None, where: str, message: str, hint: str = "") -> None:
        prefix = f"node {node}, {where}" if node else where
        super().__init__(f"{prefix}: {message}", hint=hint)


def template(
    name: str, where: str, text: str, values: dict[str, Any], outputs: dict[str, DataRef]
) -> list[Arg]:
    """A command template cut at its references; ``$[[...]]`` blocks kept only when all they name is bound."""

    def keep(block: re.Match) -> str:
        refs = REFERENCE.findall(block.group(1))
        bound = all(reference(name, where, r, values, outputs, optional=True) is not None for r in refs)
        return block.group(1) if bound else ""

    text = OPTIONAL_BLOCK.sub(keep, text)
    parts: list[Arg] = []
    last = 0
    for match in REFERENCE.finditer(text):
        parts.append(text[last : match.start()])
        value = reference(name, where, match.group(1), values, outputs, optional=False)
        parts.append(value)
        last = match.end()
    parts.append(text[last:])
    return [p for p in parts if p != ""]


def reference(
    name: str, where: str, ref: str, values: dict[str, Any], outputs: dict[str, DataRef], optional: bool
) -> Any:
    head, _, key = ref.partition(".")
    if head == "inputs" and key in values:
        value = values[key]
        if value is None and not optional:
            raise V2Error(name, f"field {where}", f"${{{{inputs.{key}}}}} is an optional input left unbound",
                          hint=f"put it in an optional block $[[... ${{{{inputs.{key}}}}}]] or bind it")  # fmt: skip
        return value
    if head == "outputs" and key in outputs:
        return outputs[key]
    known = [f"inputs.{k}" for k in values] + [f"outputs.{k}" for k in outputs]
    raise V2Error(name, f"field {where}", f"${{{{{ref}}}}} names no input or output of the component",
                  hint="it has: " + (", ".join(known) or "none"))  # fmt: skip


def data_names(values: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(v.name for v in values.values() if isinstance(v, DataRef)))


def environment_name(environment: Any) -> str | None:
    if environment is None:
        return None
    if isinstance(environment, str):
        return environment if environment.startswith("azureml://") else environment.removeprefix("azureml:")
    name = getattr(environment, "name", None)
    return None if name == "CliV2AnonymousEnvironment" else name
