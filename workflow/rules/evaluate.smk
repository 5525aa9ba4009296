# Evaluation: every model x input resolution x held-out subject, on one grid, mask and scale.


rule evaluate_model:
    input:
        unpack(eval_model_input),
        test=per_subject("dataset_subject", "test"),
    output:
        out("eval_model_metrics"),
    params:
        cfg=as_json(config["evaluate"]),
        truth_root=truth_root,
        model_arg=lambda w, input: f"--model-file {input.model}" if "model" in input.keys() else "",
        pred_pattern=lambda w: out("eval_prediction", cohort=w.cohort, model=w.model),
        track=track("evaluate_model"),
    threads: 2
    resources:
        gpu=GPU,
    log:
        log("evaluate_model", "{model}"),
    conda:
        ENV
    shell:
        "sr7t evaluate {params.track} "
        "--threads {threads} --model {wildcards.model} {params.model_arg} "
        "--cfg {params.cfg:q} --truth-root={params.truth_root:q} "
        "--pred-pattern {params.pred_pattern:q} --out {output:q} {input.test:q} > {log:q} 2>&1"


rule metrics:
    input:
        expand(out("eval_model_metrics", model="{model}"), model=EVAL_MODELS, allow_missing=True),
    output:
        table=out("metrics"),
        figure=out("eval_figure"),
        summary=out("eval_summary"),
    params:
        track=track("metrics"),
    log:
        log("metrics"),
    conda:
        ENV
    shell:
        "sr7t metrics {params.track} "
        "--out {output.table:q} --figure {output.figure:q} --summary {output.summary:q} "
        "{input:q} > {log:q} 2>&1"
