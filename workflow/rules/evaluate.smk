# Evaluation: every model x input cell x held-out subject, on one grid, mask and scale.


rule evaluate_model:
    input:
        unpack(eval_inputs),
        test=per_subject("dataset_subject", "test"),
    output:
        metrics=out("eval_model_metrics"),
        predictions=directory(out("eval_predictions")),
        example=report(
            out("eval_example_png"),
            caption="../report/example.rst",
            category="Evaluation",
            subcategory="Example slices",
            labels={"model": "{model}"},
        ),
        run=out("eval_run"),
    params: cfg=cfg("evaluate_model")
    threads: evaluate_threads
    resources: gpu=GPU
    log: log("evaluate_model", "{model}")
    conda: ENV
    script: STAGE


rule metrics:
    input:
        tables=per_model("eval_model_metrics", EVAL_MODELS),
    output:
        table=out("metrics"),
        figure=report(out("eval_figure"), caption="../report/metrics.rst", category="Evaluation"),
        summary=out("eval_summary"),
    log: log("metrics")
    conda: ENV
    script: STAGE
