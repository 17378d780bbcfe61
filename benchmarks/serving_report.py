"""The serving benchmark's report: the ``## Real-time serving`` section of BENCHMARKS.md, from a run's results."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECTION = "## Real-time serving"
TARGETS = {"speedup": 2.5, "p99_ms": 25.0, "ceiling_share": 0.8}


@dataclass
class RunCost:
    """In-process cost of one ``run()`` (median wall time over many calls, ms), its parts, and its mean CPU."""

    run_ms: float
    decode_ms: float | None = None
    predict_ms: float | None = None
    mlflow_predict_ms: float | None = None
    cpu_ms: float | None = None  # CPU time of the timed run() calls / calls: what throughput pays per call
    cpu_ms_after: float | None = None  # the same, measured again after the loads (the machine's speed drifts)

    @property
    def cost_ms(self) -> float:
        """The cost the ceiling divides the cores by: mean CPU per call (of both measurements), else the median."""
        measured = [c for c in (self.cpu_ms, self.cpu_ms_after) if c]
        return statistics.mean(measured) if measured else self.run_ms


MODEL_DESCRIPTIONS = {
    "raw": "the project's raw-columns model class (steps/raw_model.py: its own featurization of the raw columns"
    " into one array, then the LGBMRegressor's Booster called directly), logged as the register step logs a"
    " model. A model trained by the AutoML step wraps FLAML's AutoML instead and keeps FLAML's own predict"
    " (its imputation and column handling), so it is slower to call than this one",
    "lean": "the same raw columns and LightGBM (benchmarks/_model.py LeanColumnsModel), featurized with numpy"
    " after one pandas date parse and called through scikit-learn's LGBMRegressor wrapper: a model whose"
    " predict costs a few milliseconds, as many do",
    "automl": "the model the training pipeline itself registers with its default settings (`python -m"
    " pipelines.train run`: AutoML on FLAML, 1-minute budget; registered this run: {estimator}), called through"
    " FLAML's own predict. It is the model users get from the pipeline, and its `run()` costs many times the"
    " LightGBM models' above, so the same serving stack is a smaller share of each request",
}


def render_section(report: dict[str, Any]) -> str:
    """The ``## Real-time serving`` section of BENCHMARKS.md."""
    m = report["machine"]
    lines = [
        SECTION,
        "",
        f"Measured {report['date']} on {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {m['os']},"
        f" Python {m['python']}. Command: `{report['command']}`.",
        f"Load average (1/5/15 min) before and after: {report['load_before']} / {report['load_after']}; the machine"
        " is shared with other work, so these are the numbers of one run.",
        "",
        f"Both servers run side by side in the same run. The `raw` and `lean` models are {report['trees']}-tree"
        " LightGBMs trained on the bike columns; the `automl` model is trained by the pipeline. Payload: data.json"
        " with 2 real rows (no label, no leaking columns), posted with the Bearer key to 127.0.0.1 by"
        f" `ab -c {report['concurrency']} -n {report['requests']}`.",
        "",
        "- baseline: what users deploy today, azureml-inference-server-http with its CLI's settings and default single"
        " worker, serving benchmarks/baseline_score.py (inference-schema `PandasParameterType`), LightGBM's"
        " default threads;",
        f"- project: `python -m pipelines.deploy` (scoring/score.py, {report['workers']} workers with one model"
        " thread each, behind the key check).",
        "",
    ]
    for kind, res in report["models"].items():
        lines += _model_block(kind, res, m, report)
    lines += [f"Notes: {note}" for note in report.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _model_block(kind: str, res: dict[str, Any], m: dict[str, str], report: dict[str, Any]) -> list[str]:
    """One model's results: the two servers, the cost of run() and the ceiling, targets, floors, sweep."""
    cost = RunCost(**res["project_cost"]).cost_ms
    return (
        _servers_table(kind, res, report)
        + _cost_and_targets(res, m, report, cost)
        + _little_law(res, m, report)
        + _cpu_split(res, m, report, cost)
        + _floors(res, m, cost)
        + _sweep_table(kind, res, report)
    )


def _servers_table(kind: str, res: dict[str, Any], report: dict[str, Any]) -> list[str]:
    base, proj = res["baseline"], res["project"]
    lines = [
        f"### Model `{kind}`: {MODEL_DESCRIPTIONS.get(kind, kind).format(estimator=res.get('estimator'))}",
        "",
        "| server | req/s | p50 ms | p95 ms | p99 ms | failed | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in (("baseline", base), ("project", proj)):
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} |"
            f" {r['non_2xx']} |"
        )
    if proj["requests"] != report["requests"]:
        lines += [
            "",
            f"For this model both servers got `ab -c {report['concurrency']} -n {proj['requests']}`: at the baseline's"
            f" {base['rps']:.0f} req/s, {report['requests']} requests would take"
            f" {report['requests'] / base['rps'] / 60:.0f} minutes.",
        ]
    return lines


def _cost_and_targets(
    res: dict[str, Any], m: dict[str, str], report: dict[str, Any], cost: float
) -> list[str]:
    base, proj, pc, bc = res["baseline"], res["project"], res["project_cost"], res["baseline_cost"]
    speedup = proj["rps"] / base["rps"]
    ceiling = res["ceiling_rps"]
    share = proj["rps"] / ceiling
    return [
        "",
        f"In-process cost of one `run()` ({res.get('calls', report['calls'])} calls, one model thread), median"
        f" wall time: baseline {bc['run_ms']:.2f} ms; project {pc['run_ms']:.2f} ms. Its parts, each the median of its"
        f" own loop (so they need not add up to it): decode + validation {pc['decode_ms']:.2f} ms, the model's predict"
        f" {pc['predict_ms']:.2f} ms (through MLflow's `PyFuncModel.predict`, which checks the signature again:"
        f" {pc['mlflow_predict_ms']:.2f} ms)."
        + (
            f" What throughput pays per call is the mean CPU time: {pc['cpu_ms']:.2f} ms before the loads and"
            f" {pc['cpu_ms_after']:.2f} ms after them (the same loop, timed again)."
            if pc.get("cpu_ms") and pc.get("cpu_ms_after")
            else ""
        )
        + f" Ceiling = {m['nproc']} cores / {cost:.2f} ms = {ceiling:.0f} req/s.",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| throughput >= {TARGETS['speedup']}x baseline | {speedup:.2f}x | {_verdict(speedup >= TARGETS['speedup'])} |",
        f"| p99 <= {TARGETS['p99_ms']:.0f} ms | {proj['p99_ms']:.1f} ms | {_verdict(proj['p99_ms'] <= TARGETS['p99_ms'])} |",
        f"| zero non-2xx and failed | {proj['non_2xx']} / {proj['failed']} |"
        f" {_verdict(proj['non_2xx'] == 0 and proj['failed'] == 0)} |",
        f"| throughput >= {TARGETS['ceiling_share']:.0%} of the ceiling | {share:.0%} of {ceiling:.0f} req/s |"
        f" {_verdict(share >= TARGETS['ceiling_share'])} |",
        f"| decode + validation <= predict | {pc['decode_ms']:.2f} ms vs {pc['predict_ms']:.2f} ms |"
        f" {_verdict(pc['decode_ms'] <= pc['predict_ms'])} |",
        "",
    ]


def _little_law(res: dict[str, Any], m: dict[str, str], report: dict[str, Any]) -> list[str]:
    ceiling = res["ceiling_rps"]
    least_wait_ms = report["concurrency"] * 1000 / ceiling
    if least_wait_ms <= TARGETS["p99_ms"]:
        return []
    return [
        f"No server can meet the p99 target with this model at `-c {report['concurrency']}` on {m['nproc']} cores:"
        f" with at most {ceiling:.0f} req/s, {report['concurrency']} requests in flight take {least_wait_ms:.0f} ms"
        " on average (Little's law), more than the target allows any request.",
        "",
    ]


def _budget(cost: float) -> float:
    """ms per request the ceiling-share target leaves beside run()."""
    return cost * (1 / TARGETS["ceiling_share"] - 1)


def _cpu_split(res: dict[str, Any], m: dict[str, str], report: dict[str, Any], cost: float) -> list[str]:
    proj = res["project"]
    if not proj.get("cpu"):
        return []
    cpu = proj["cpu"]
    return [
        f"Where the CPU went during the project's `-c {report['concurrency']}` run, per request: the deployment's"
        f" processes {cpu['server_ms']:.2f} ms, ab {cpu['ab_ms']:.2f} ms, the whole machine {cpu['busy_ms']:.2f}"
        f" ms (its {m['nproc']} cores, less idle and stolen time, give {int(m['nproc']) * 1000 / proj['rps']:.2f}"
        f" ms per request at this rate). Of the server's {cpu['server_ms']:.2f} ms, {cost:.2f} ms is the"
        f" in-process CPU cost of `run()`, so {cpu['server_ms'] - cost:.2f} ms goes to gunicorn, the key"
        f" check, Flask and the inference server, and to `run()` costing more between requests than in a tight"
        f" loop. {TARGETS['ceiling_share']:.0%} of the ceiling leaves {_budget(cost):.2f} ms per request for everything"
        f" that is not `run()`; this run spent {cpu['busy_ms'] - cost:.2f} ms.",
        "",
    ]


def _floors(res: dict[str, Any], m: dict[str, str], cost: float) -> list[str]:
    """The do-nothing deployment and bare gunicorn measured in the same run, and the bound each puts on the share."""
    lines: list[str] = []
    if res.get("floor"):
        floor = res["floor"]
        stack_ms, bound = _cap(floor, int(m["nproc"]), cost)
        server = (
            f" (the deployment's processes {floor['cpu']['server_ms']:.2f} ms)" if floor.get("cpu") else ""
        )
        lines += [
            f"Stack floor, same run: the same deployment serving benchmarks/noop_score.py (a run() that does nothing)"
            f" answers {floor['rps']:.0f} req/s (p99 {floor['p99_ms']:.1f} ms, {floor['non_2xx']} non-2xx), i.e."
            f" {stack_ms:.2f} ms of the {m['nproc']} cores per request{server} for ab, the kernel, gunicorn, the key"
            f" check and the inference server. Were costs simply additive, the share of the ceiling could be at most"
            f" {cost:.2f} / ({cost:.2f} + {stack_ms:.2f}) = {bound:.0%} on this stack.",
            "",
        ]
    if res.get("bare"):
        bare = res["bare"]
        bare_ms, bound = _cap(bare, int(m["nproc"]), cost)
        server = f" (gunicorn's processes {bare['cpu']['server_ms']:.2f} ms)" if bare.get("cpu") else ""
        lines += [
            f"gunicorn floor, same run: the same gunicorn with the same {res['workers']} sync workers serving"
            f" benchmarks/bare_wsgi.py (no Flask, no inference server, no key check: it reads the body and answers"
            f" two zeros) answers {bare['rps']:.0f} req/s (p99 {bare['p99_ms']:.1f} ms, {bare['non_2xx']} non-2xx),"
            f" i.e. {bare_ms:.2f} ms of the {m['nproc']} cores per request{server} for ab, the kernel and gunicorn"
            f" alone. Under gunicorn, whatever runs inside it, the share of the ceiling could be at most"
            f" {cost:.2f} / ({cost:.2f} + {bare_ms:.2f}) = {bound:.0%}"
            + (
                f": the {TARGETS['ceiling_share']:.0%} target needs the whole stack within {_budget(cost):.2f} ms per"
                " request, less than gunicorn alone costs here."
                if bound < TARGETS["ceiling_share"]
                else "."
            ),
            "",
        ]
    return lines


def _sweep_table(kind: str, res: dict[str, Any], report: dict[str, Any]) -> list[str]:
    lines = [
        f"By concurrency (`ab -n {res.get('sweep_requests', report['sweep_requests'])}` per point for the project,"
        " half that for the baseline):",
        "",
        "| server | -c | req/s | p50 ms | p95 ms | p99 ms | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["sweep"]:
        lines.append(
            f"| {r['label']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
            f" {r['p99_ms']:.1f} | {r['non_2xx']} |"
        )
    return lines + ["", f"![latency and throughput by concurrency, model {kind}]({res['plot']})", ""]


def _cap(level: dict[str, Any], cores: int, cost_ms: float) -> tuple[float, float]:
    """What a stack alone (a do-nothing server measured at ``level``) costs per request of the cores, and the
    largest share of the ceiling a ``run()`` of ``cost_ms`` could reach on it, were costs additive."""
    stack_ms = cores * 1000 / level["rps"]
    return stack_ms, cost_ms / (cost_ms + stack_ms)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the ``## Real-time serving`` section, keeping the others (benchmarks/report.py)."""
    from benchmarks.report import update_section

    heading, _, body = section.partition("\n")
    update_section(path, heading.removeprefix("## ").strip(), body.lstrip("\n"))
