# sr7t: 1.5T -> 7T-like MRI super-resolution. A table of contents; logic lives in src/sr7t.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/infer.smk"


onstart:
    start_tracking()


onsuccess:
    end_tracking("FINISHED")


onerror:
    end_tracking("FAILED")


rule all:
    input:
        final_outputs(),
    default_target: True
