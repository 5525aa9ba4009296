# Models: the guided diffusion teacher, the K progressive-distillation student stages, and the
# regression UNet baseline (the final student's architecture and budget, no diffusion). Each
# bundle carries the whole resolved config (sr7t.stages: why it is not an input file); its own
# sections are params.cfg, so a change of them retrains it. Checkpoints are params, not
# outputs: Snakemake deletes a failed job's outputs, and training resumes from them. Each also
# writes its metrics history (the report's training curves) and where its MLflow run lives.


# The teacher and its students are the workflow's longest chain: when a core frees, they go
# before the evaluations and the regression baseline that could wait (priority).


rule teacher:
    priority: 10
    input:
        train=per_subject("dataset_subject", "train"),
        val=per_subject("dataset_subject", "val"),
    output:
        model=out("model", model="teacher"),
        summary=out("model_summary", model="teacher"),
        history=out("model_history", model="teacher"),
        run=out("model_run", model="teacher"),
    params:
        cfg=cfg("teacher"),
        checkpoints=out("model_checkpoints", model="teacher"),
    threads: JOB_THREADS
    resources: gpu=GPU
    log: log("teacher")
    conda: ENV
    script: STAGE


rule distill_stage:
    priority: 10
    input:
        parent=parent_model,
        train=per_subject("dataset_subject", "train"),
        val=per_subject("dataset_subject", "val"),
    output:
        model=out("model", model="student_stage{k}"),
        summary=out("model_summary", model="student_stage{k}"),
        history=out("model_history", model="student_stage{k}"),
        run=out("model_run", model="student_stage{k}"),
    params:
        cfg=cfg("distill_stage"),
        checkpoints=out("model_checkpoints", model="student_stage{k}"),
    threads: JOB_THREADS
    resources: gpu=GPU
    log: log("distill_stage", "stage{k}")
    conda: ENV
    script: STAGE


rule regression:
    input:
        train=per_subject("dataset_subject", "train"),
        val=per_subject("dataset_subject", "val"),
    output:
        model=out("model", model="regression"),
        summary=out("model_summary", model="regression"),
        history=out("model_history", model="regression"),
        run=out("model_run", model="regression"),
    params:
        cfg=cfg("regression"),
        checkpoints=out("model_checkpoints", model="regression"),
    threads: JOB_THREADS
    resources: gpu=GPU
    log: log("regression")
    conda: ENV
    script: STAGE
