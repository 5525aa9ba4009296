# The one script every stage rule runs: the sr7t stage named like the rule, given the rule's
# named input, output, params, log, threads and wildcards (sr7t.stages.run_from_snakemake).
from sr7t.stages import run_from_snakemake

run_from_snakemake(snakemake)  # noqa: F821 (Snakemake defines it)
