# Cohort stages: the synthetic demo cohort, ingestion and the manifest.


def ingest_inputs(wildcards):
    """The raw files a subject's ingest reads (the demo's raw folder for demo cohorts)."""
    if COHORTS[wildcards.cohort].source == "demo":
        return {"raw": out("demo_raw_dir", cohort=wildcards.cohort)}
    sub = subject_record(wildcards)
    raw = {"scan_1p5T": sub.scan_1p5T, "scan_7T": sub.scan_7T}
    raw |= {k: v for k in ("coef_1p5T", "coef_7T") if (v := getattr(sub, k))}
    return raw


def raw(key):
    """Param function: the subject's raw path ``key`` from its cohort ('' when absent)."""
    return lambda w: getattr(subject_record(w), key) or ""


def demo_flags(wildcards):
    d = config["cohorts"][wildcards.cohort]["demo"]
    return (
        f"--n-subjects {d['n_subjects']} --seed {d['seed']} --voxel-mm-7t {d['voxel_mm_7t']} "
        f"--voxel-mm-1p5t {' '.join(str(v) for v in d['voxel_mm_1p5t'])}"
    )


rule demo_cohort:
    output:
        directory(out("demo_raw_dir")),
    params:
        demo=demo_flags,
        track=track,
    log:
        log("demo_cohort"),
    conda:
        ENV
    shell:
        "sr7t demo --rule {rule} --cohort {wildcards.cohort} {params.track} {params.demo} "
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
        track=track,
    log:
        log("ingest", "{subject}"),
    conda:
        ENV
    shell:
        "sr7t ingest --rule {rule} --cohort {wildcards.cohort} {params.track} "
        "--subject {wildcards.subject} --scan-1p5t {params.scan_1p5T:q} "
        "--scan-7t {params.scan_7T:q} --coef-1p5t {params.coef_1p5T:q} "
        "--coef-7t {params.coef_7T:q} --out-1p5t {output.scan_1p5T:q} "
        "--out-7t {output.scan_7T:q} --rows {output.rows:q} > {log:q} 2>&1"


rule manifest:
    input:
        per_subject("ingest_row"),
    output:
        out("manifest"),
    params:
        splits=lambda w: as_json({s: r.split for s, r in COHORTS[w.cohort].subjects.items()}),
        track=track,
    log:
        log("manifest"),
    conda:
        ENV
    shell:
        "sr7t manifest --rule {rule} --cohort {wildcards.cohort} {params.track} "
        "--splits {params.splits:q} --out {output:q} {input:q} > {log:q} 2>&1"
