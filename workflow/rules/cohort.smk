# Cohort stages: the synthetic demo cohort, ingestion and the manifest.


rule demo_cohort:
    output:
        directory(out("demo_raw_dir")),
    params:
        demo=demo_flags,
        track=track("demo_cohort"),
    log:
        log("demo_cohort"),
    conda:
        ENV
    shell:
        "sr7t demo {params.track} {params.demo} "
        "--out {output:q} > {log:q} 2>&1"


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        scan_1p5T=out("ingest_scan", field="1p5T"),
        scan_7T=out("ingest_scan", field="7T"),
        rows=out("ingest_row"),
    params:
        scan_1p5T=raw("scan_1p5T"),
        scan_7T=raw("scan_7T"),
        coef_1p5T=raw("coef_1p5T"),
        coef_7T=raw("coef_7T"),
        track=track("ingest"),
    log:
        log("ingest", "{subject}"),
    conda:
        ENV
    shell:
        "sr7t ingest {params.track} "
        "--subject {wildcards.subject} --scan-1p5t={params.scan_1p5T:q} "
        "--scan-7t={params.scan_7T:q} --coef-1p5t={params.coef_1p5T:q} "
        "--coef-7t={params.coef_7T:q} --out-1p5t {output.scan_1p5T:q} "
        "--out-7t {output.scan_7T:q} --rows {output.rows:q} > {log:q} 2>&1" + SHOW_ERROR


rule ingest_infer:
    # a subject without a 7T scan (split "infer"): its 1.5T only, for inference
    input:
        unpack(ingest_inputs),
    output:
        scan_1p5T=out("ingest_infer_scan"),
        rows=out("ingest_infer_row"),
    params:
        scan_1p5T=raw("scan_1p5T"),
        coef_1p5T=raw("coef_1p5T"),
        track=track("ingest_infer"),
    log:
        log("ingest_infer", "{subject}"),
    conda:
        ENV
    shell:
        "sr7t ingest {params.track} --no-7t "
        "--subject {wildcards.subject} --scan-1p5t={params.scan_1p5T:q} "
        "--coef-1p5t={params.coef_1p5T:q} --out-1p5t {output.scan_1p5T:q} "
        "--rows {output.rows:q} > {log:q} 2>&1" + SHOW_ERROR


rule manifest:
    input:
        ingest_rows,
    output:
        out("manifest"),
    params:
        splits=lambda w: as_json({s: r.split for s, r in COHORTS[w.cohort].subjects.items()}),
        track=track("manifest"),
    log:
        log("manifest"),
    conda:
        ENV
    shell:
        "sr7t manifest {params.track} "
        "--splits {params.splits:q} --out {output:q} {input:q} > {log:q} 2>&1"
