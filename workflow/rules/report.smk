# The cohort's self-contained HTML report: it assembles the tables and reportlets the stages
# wrote, and reads nothing else.


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
    output:
        report=report(out("report"), caption="../report/report.rst", category="Report"),
    log: log("report")
    conda: ENV
    script: STAGE
