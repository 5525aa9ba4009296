# Preprocessing: gradient-nonlinearity guidance, N4, registration onto the 7T grid, QC.
#
# Order (why gradunwarp comes first): the GNL displacement is defined in each scanner's own
# coordinates, so the 7T is unwarped on its native grid before N4 and before it serves as
# the registration target; the 1.5T keeps its distortion and gets guidance maps instead.


rule gradunwarp:
    priority: teacher_subjects_first("gradunwarp")
    input:
        unpack(raw_inputs("coef_1p5T", "coef_7T")),
        scan_7T=out("ingest_scan", field="7T"),
        scan_1p5T=out("ingest_scan", field="1p5T"),
    output:
        unwarped_7T=out("gnl_7T_unwarped"),
        jacobian=out("gnl_1p5T_jacobian"),
        dispmag=out("gnl_1p5T_dispmag"),
        qc=out("gnl_qc"),
    params: cfg=raw_files
    log: log("gradunwarp", "{subject}")
    conda: ENV
    script: STAGE


rule n4:
    priority: teacher_subjects_first("n4")
    input:
        scan=n4_input,
    output:
        corrected=out("n4_corrected"),
        bias=out("n4_bias"),
        mask=out("n4_mask"),
        qc=out("n4_qc"),
    params: cfg=cfg("n4")
    threads: JOB_THREADS
    log: log("n4", "{subject}_{field}")
    conda: ENV
    script: STAGE


rule register:
    priority: teacher_subjects_first("register")
    input:
        moving=out("n4_corrected", field="1p5T"),
        fixed=out("n4_corrected", field="7T"),
        fixed_mask=out("n4_mask", field="7T"),
        bias=out("n4_bias", field="1p5T"),
        jacobian=out("gnl_1p5T_jacobian"),
        dispmag=out("gnl_1p5T_dispmag"),
    output:
        moving=out("reg_1p5T"),
        bias=out("reg_bias"),
        jacobian=out("reg_jacobian"),
        dispmag=out("reg_dispmag"),
        transform=out("reg_transform"),
        qc=out("reg_qc"),
        qc_png=report(
            out("reg_qc_png"),
            caption="../report/register_qc.rst",
            category="Preprocessing QC",
            subcategory="Registration",
            labels={"subject": "{subject}"},
        ),
    params: cfg=cfg("register")
    threads: 1  # one ITK thread: bit-for-bit repeatable registrations
    log: log("register", "{subject}")
    conda: ENV
    script: STAGE


rule preprocess_qc:
    input:
        unpack(each_subject(QC_INPUTS)),
        unpack(demo_raw),
    output:
        table=report(
            out("preprocess_qc"), caption="../report/preprocess_qc.rst", category="Preprocessing QC"
        ),
    log: log("preprocess_qc")
    conda: ENV
    script: STAGE


rule dataset:
    priority: teacher_subjects_first("dataset")
    input:
        reg_1p5T=out("reg_1p5T"),
        reg_bias=out("reg_bias"),
        reg_jacobian=out("reg_jacobian"),
        reg_dispmag=out("reg_dispmag"),
        gnl_qc=out("gnl_qc"),
        native_1p5T=out("ingest_scan", field="1p5T"),
        mask=out("n4_mask", field="7T"),
        target=out("n4_corrected", field="7T"),
    output:
        npz=out("dataset_subject"),
        png=report(
            out("dataset_qc_png"),
            caption="../report/dataset_qc.rst",
            category="Preprocessing QC",
            subcategory="What the model sees",
            labels={"subject": "{subject}"},
        ),
    log: log("dataset", "{subject}")
    conda: ENV
    script: STAGE
