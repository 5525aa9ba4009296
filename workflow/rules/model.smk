# Models: the guided diffusion teacher, the K progressive-distillation student stages, and the
# regression UNet baseline (the final student's architecture and budget, no diffusion).


rule teacher:
    input:
        manifest=out("manifest"),
        train=per_subject("dataset_subject", "train"),
        val=per_subject("dataset_subject", "val"),
    output:
        model=out("model", model="teacher"),
        summary=out("model_summary", model="teacher"),
    params:
        cfg=as_json({"teacher": config["teacher"], "data": config["data"]}),
        checkpoints=out("model_checkpoints", model="teacher"),
        track=track("teacher"),
    threads: 2
    resources:
        gpu=GPU,
    log:
        log("teacher"),
    conda:
        ENV
    shell:
        "sr7t train-teacher {params.track} "
        "--threads {threads} --cfg {params.cfg:q} --train {input.train:q} --val {input.val:q} "
        "--checkpoints {params.checkpoints:q} --out {output.model:q} "
        "--summary {output.summary:q} > {log:q} 2>&1"


rule distill_stage:
    input:
        parent=parent_model,
        train=per_subject("dataset_subject", "train"),
        val=per_subject("dataset_subject", "val"),
    output:
        model=out("model", model="student_stage{k}"),
        summary=out("model_summary", model="student_stage{k}"),
    params:
        cfg=as_json({"distill": config["distill"], "data": config["data"]}),
        checkpoints=out("model_checkpoints", model="student_stage{k}"),
        track=track("distill_stage"),
    threads: 2
    resources:
        gpu=GPU,
    log:
        log("distill_stage", "stage{k}"),
    conda:
        ENV
    shell:
        "sr7t distill {params.track} "
        "--threads {threads} --stage {wildcards.k} --cfg {params.cfg:q} "
        "--parent {input.parent:q} --train {input.train:q} --val {input.val:q} "
        "--checkpoints {params.checkpoints:q} --out {output.model:q} "
        "--summary {output.summary:q} > {log:q} 2>&1"


rule regression:
    input:
        train=per_subject("dataset_subject", "train"),
        val=per_subject("dataset_subject", "val"),
    output:
        model=out("model", model="regression"),
        summary=out("model_summary", model="regression"),
    params:
        cfg=as_json({k: config[k] for k in ("distill", "data", "teacher")}),
        checkpoints=out("model_checkpoints", model="regression"),
        track=track("regression"),
    threads: 2
    resources:
        gpu=GPU,
    log:
        log("regression"),
    conda:
        ENV
    shell:
        "sr7t train-regression {params.track} "
        "--threads {threads} --cfg {params.cfg:q} --train {input.train:q} --val {input.val:q} "
        "--checkpoints {params.checkpoints:q} --out {output.model:q} "
        "--summary {output.summary:q} > {log:q} 2>&1"
