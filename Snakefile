# regmix: choose a pre-training data mixture by regression (RegMix, Liu et al. 2025).
# Stages and file formats: docs in README.md; run with `snakemake --cores all`.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/content.smk"
include: "rules/data.smk"
include: "rules/mixtures.smk"
include: "rules/proxy.smk"
include: "rules/regression.smk"
include: "rules/final.smk"
include: "rules/evaluation.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


onsuccess:
    print(
        "\nRegMix finished. Summary: results/final/summary.md; figures: results/report/; "
        "HTML report: snakemake --report report.html"
    )
