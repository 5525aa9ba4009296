# Cohort stages: the resolved config, the synthetic demo cohort, ingestion and the manifest.


rule resolved_config:
    output:
        config=out("resolved_config"),
    params: cfg=cfg("resolved_config")
    log: log("resolved_config")
    conda: ENV
    script: STAGE


rule demo_cohort:
    output:
        raw=directory(out("demo_raw_dir")),
    params: cfg=demo_config
    # its subjects dealt to two processes (sr7t.cohort.demo): every demo subject's chain
    # starts with it
    threads: 2
    log: log("demo_cohort")
    conda: ENV
    script: STAGE


rule ingest:
    priority: teacher_subjects_first("ingest")
    input:
        unpack(raw_inputs(*RAW_KEYS)),
    output:
        scan_1p5T=out("ingest_scan", field="1p5T"),
        scan_7T=out("ingest_scan", field="7T"),
        rows=out("ingest_row"),
    params: cfg=raw_files
    log: log("ingest", "{subject}")
    conda: ENV
    script: STAGE


rule ingest_infer:
    # a subject without a 7T scan (split "infer"): its 1.5T only, for inference
    input:
        unpack(raw_inputs(*RAW_KEYS)),
    output:
        scan_1p5T=out("ingest_infer_scan"),
        rows=out("ingest_infer_row"),
    params: cfg=raw_files
    log: log("ingest_infer", "{subject}")
    conda: ENV
    script: STAGE


rule manifest:
    input:
        rows=ingest_rows,
    output:
        manifest=out("manifest"),
    params: cfg=splits
    log: log("manifest")
    conda: ENV
    script: STAGE
