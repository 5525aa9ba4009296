# Preprocessing: gradient-nonlinearity guidance, N4, registration onto the 7T grid, QC.
#
# Order (why gradunwarp comes first): the GNL displacement is defined in each scanner's own
# coordinates, so the 7T is unwarped on its native grid before N4 and before it serves as
# the registration target; the 1.5T keeps its distortion and gets guidance maps instead.


rule gradunwarp:
    input:
        scan_7T=out("ingest_scan", field="7T"),
        scan_1p5T=out("ingest_scan", field="1p5T"),
    output:
        unwarped_7T=out("gnl_7T_unwarped"),
        jacobian=out("gnl_1p5T_jacobian"),
        dispmag=out("gnl_1p5T_dispmag"),
        qc=out("gnl_qc"),
    params:
        coef_1p5T=raw("coef_1p5T"),
        coef_7T=raw("coef_7T"),
        track=track("gradunwarp"),
    log:
        log("gradunwarp", "{subject}"),
    conda:
        ENV
    shell:
        "sr7t gradunwarp {params.track} "
        "--subject {wildcards.subject} --scan-7t {input.scan_7T:q} "
        "--scan-1p5t {input.scan_1p5T:q} --coef-7t={params.coef_7T:q} "
        "--coef-1p5t={params.coef_1p5T:q} --out-7t-unwarped {output.unwarped_7T:q} "
        "--out-jacobian {output.jacobian:q} --out-dispmag {output.dispmag:q} "
        "--out-qc {output.qc:q} > {log:q} 2>&1" + SHOW_ERROR


rule n4:
    input:
        n4_input,
    output:
        corrected=out("n4_corrected"),
        bias=out("n4_bias"),
        mask=out("n4_mask"),
        qc=out("n4_qc"),
    params:
        cfg=as_json(config["preprocess"]["n4"]),
        track=track("n4"),
    threads: 2
    log:
        log("n4", "{subject}_{field}"),
    conda:
        ENV
    shell:
        "sr7t n4 {params.track} "
        "--subject {wildcards.subject} --threads {threads} --cfg {params.cfg:q} "
        "--scan {input:q} --out-corrected {output.corrected:q} --out-bias {output.bias:q} "
        "--out-mask {output.mask:q} --out-qc {output.qc:q} > {log:q} 2>&1" + SHOW_ERROR


rule register:
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
        qc_png=out("reg_qc_png"),
    params:
        cfg=as_json(config["preprocess"]["register"]),
        track=track("register"),
    threads: 1  # one ITK thread: bit-for-bit repeatable registrations
    log:
        log("register", "{subject}"),
    conda:
        ENV
    shell:
        "sr7t register {params.track} "
        "--subject {wildcards.subject} --threads {threads} --cfg {params.cfg:q} "
        "--moving {input.moving:q} --fixed {input.fixed:q} --fixed-mask {input.fixed_mask:q} "
        "--map bias {input.bias:q} {output.bias:q} "
        "--map jacobian {input.jacobian:q} {output.jacobian:q} "
        "--map dispmag {input.dispmag:q} {output.dispmag:q} "
        "--out-moving {output.moving:q} --out-transform {output.transform:q} "
        "--out-qc {output.qc:q} --out-qc-png {output.qc_png:q} > {log:q} 2>&1" + SHOW_ERROR


rule preprocess_qc:
    input:
        gnl=per_subject("gnl_qc"),
        n4_1p5T=per_subject("n4_qc", field="1p5T"),
        n4_7T=per_subject("n4_qc", field="7T"),
        reg=per_subject("reg_qc"),
        reg_transform=per_subject("reg_transform"),
        n4_bias_7T=per_subject("n4_bias", field="7T"),
        n4_mask_7T=per_subject("n4_mask", field="7T"),
        unwarped_7T=per_subject("gnl_7T_unwarped"),
        scan_7T=per_subject("ingest_scan", field="7T"),
    output:
        out("preprocess_qc"),
    params:
        subjects=lambda w: " ".join(subjects(w.cohort)),
        truth=lambda w: (
            out("demo_raw_dir", cohort=w.cohort) if COHORTS[w.cohort].source == "demo" else ""
        ),
        results=lambda w: RESULTS,
        track=track("preprocess_qc"),
    log:
        log("preprocess_qc"),
    conda:
        ENV
    shell:
        "sr7t preprocess-qc {params.track} "
        "--results-root {params.results:q} --subjects {params.subjects} --demo-raw={params.truth:q} "
        "--out {output:q} > {log:q} 2>&1"


rule dataset:
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
        png=out("dataset_qc_png"),
    params:
        track=track("dataset"),
    log:
        log("dataset", "{subject}"),
    conda:
        ENV
    shell:
        "sr7t dataset {params.track} "
        "--subject {wildcards.subject} --reg-1p5t {input.reg_1p5T:q} "
        "--reg-bias {input.reg_bias:q} --reg-jacobian {input.reg_jacobian:q} "
        "--reg-dispmag {input.reg_dispmag:q} --gnl-qc {input.gnl_qc:q} "
        "--native-1p5t {input.native_1p5T:q} --mask {input.mask:q} --target {input.target:q} "
        "--out {output.npz:q} --out-png {output.png:q} > {log:q} 2>&1"
