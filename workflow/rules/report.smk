# The cohort's self-contained HTML report (it assembles what the stages wrote).


rule report:
    input:
        metrics=out("metrics"),
        figure=out("eval_figure"),
        summary=out("eval_summary"),
        preprocess_qc=out("preprocess_qc"),
        manifest=out("manifest"),
        reg_png=per_subject("reg_qc_png"),
        guidance_png=per_subject("dataset_qc_png"),
        summaries=expand(
            out("model_summary", model="{model}"), model=LEARNED_MODELS, allow_missing=True
        ),
    output:
        report(out("report"), caption="../report/report.rst", category="Report"),
    params:
        results=lambda w: RESULTS,
        track=track("report"),
    log:
        log("report"),
    conda:
        ENV
    shell:
        "sr7t report {params.track} "
        "--results-root {params.results:q} --out {output:q} > {log:q} 2>&1"
