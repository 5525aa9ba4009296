# The cohort's self-contained HTML report: it assembles the tables and reportlets the stages
# wrote (sr7t.report.html.REPORT_SPEC), and reads nothing else. The two figures that need
# several stages' outputs have their own rules: the slice montage (every model's predictions)
# and the training curves (every model's history).


rule montage:
    input:
        unpack(demo_raw),
        predictions=per_model("eval_predictions", EVAL_MODELS),
        test=per_subject("dataset_subject", "test"),
    output:
        figure=report(
            out("eval_montage"), caption="../report/montage.rst", category="Evaluation"
        ),
    params: cfg=cfg("montage")
    log: log("montage")
    conda: ENV
    script: STAGE


rule training_curves:
    input:
        histories=per_model("model_history", LEARNED_MODELS),
    output:
        figure=report(
            out("training_curves"), caption="../report/training_curves.rst", category="Training"
        ),
    log: log("training_curves")
    conda: ENV
    script: STAGE


rule report:
    input:
        unpack(each_subject(SUBJECT_FIGURES)),
        metrics=out("metrics"),
        figure=out("eval_figure"),
        summary=out("eval_summary"),
        preprocess_qc=out("preprocess_qc"),
        manifest=out("manifest"),
        summaries=per_model("model_summary", LEARNED_MODELS),
        examples=per_model("eval_example_png", EVAL_MODELS),
        montage=out("eval_montage"),
        training_curves=out("training_curves"),
        runs=per_model("model_run", LEARNED_MODELS) + per_model("eval_run", EVAL_MODELS),
        config=out("resolved_config"),
    output:
        report=report(out("report"), caption="../report/report.rst", category="Report"),
    params: cfg=cfg("report"), left_out=left_out
    log: log("report")
    conda: ENV
    script: STAGE
