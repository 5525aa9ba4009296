# Inference of subjects without a 7T scan (split "infer"; sr7t.infer): the cohort's model
# (another cohort's, a bundle file or an MLflow registered model), then per subject N4 and GNL
# guidance as `sr7t predict` does them, the prediction in the scan's world space as a BIDS
# derivative with its sidecar, and a report without truth metrics.


checkpoint infer_model:
    # a checkpoint: the output's resolution label (file names) is the model's voxel size
    input:
        unpack(infer_model_input),
    output:
        model=out("infer_model"),
        info=out("infer_model_info"),
    params: cfg=model_spec
    log: log("infer_model")
    conda: ENV
    script: STAGE


rule infer_n4:
    input:
        scan=out("ingest_infer_scan"),
        model=out("infer_model"),
    output:
        corrected=out("infer_n4_corrected"),
        bias=out("infer_n4_bias"),
        mask=out("infer_n4_mask"),
        qc=out("infer_n4_qc"),
    params: cfg=infer_brain_mask
    threads: JOB_THREADS
    log: log("infer_n4", "{subject}")
    conda: ENV
    script: STAGE


rule infer_guidance:
    input:
        unpack(raw_inputs("coef_1p5T")),
        scan=out("ingest_infer_scan"),
        model=out("infer_model"),
    output:
        jacobian=out("infer_jacobian"),
        dispmag=out("infer_dispmag"),
    params: cfg=raw_files
    log: log("infer_guidance", "{subject}")
    conda: ENV
    script: STAGE


rule infer:
    input:
        unpack(infer_inputs),
    output:
        t1w=out("derivative_t1w"),
        sidecar=out("derivative_sidecar"),
        figure=out("derivative_figure"),
    params: cfg=infer_params
    threads: JOB_THREADS
    resources: gpu=GPU
    log: log("infer", "{bids_dir}/{bids_prefix}_res-{res}")
    conda: ENV
    script: STAGE


rule derivatives_description:
    output:
        description=out("derivatives_description"),
    params: cfg=derivatives_params
    log: log("derivatives_description")
    conda: ENV
    script: STAGE


rule infer_report:
    input:
        unpack(infer_report_inputs),
    output:
        report=out("infer_report"),
    params: cfg=infer_report_params, left_out=left_out
    log: log("infer_report")
    conda: ENV
    script: STAGE
