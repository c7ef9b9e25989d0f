"""The whole pipeline as one job: songs in, a sample out.

    python jobs/pipeline.py --config infra/pipeline/demo.yaml --input demo --output runs/demo
    python jobs/pipeline.py --config infra/pipeline/songs.yaml --input my-songs --output runs/my-songs
    python jobs/pipeline.py --config infra/pipeline/songs.yaml --input my-songs --output runs/my-songs --from prior.top
    python jobs/pipeline.py --config infra/pipeline/songs.yaml ... --vqvae.bottom.runtime.total_steps 50
    ray job submit --working-dir . -- python jobs/pipeline.py --config infra/pipeline/paper.yaml --input /shared/corpus \
        --output /shared/runs/paper

Stages, in order: preprocess, vqvae.top, vqvae.middle, vqvae.bottom, prior.top, prior.middle,
prior.bottom, sample. Each stage's section of the YAML is that job's own config (the same
fields, bounds and dotted overrides as jobs/preprocess.py, jobs/train_vqvae.py,
jobs/train_prior.py and jobs/sample.py). Each stage consumes the exact registry versions its
upstream stage produced in this run. Rerunning the same command skips every stage whose config
and inputs are unchanged; a changed setting reruns that stage and everything after it; a
training stage killed mid-run continues from its last checkpoint. --from, --until and --only
select stages. One Ray (embedded, or the cluster's from --ray_address / $RAY_ADDRESS) serves
every stage; one MLflow run holds every stage's run; <output>/pipeline.json lists what each
stage consumed and produced.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from pipeline.cli import run_job  # noqa: E402
from pipeline.flow.config import PipelineConfig, prepare  # noqa: E402
from pipeline.flow.run import StageFailed, run_pipeline  # noqa: E402
from pipeline.tracking import redact  # noqa: E402


def main(cfg: PipelineConfig) -> dict:
    try:
        summary = run_pipeline(cfg)
    except StageFailed as exc:  # the cause, last on the console; the traceback is in the stage's log
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return {"failed": str(exc)}
    print(f"pipeline done in {summary['wall_seconds']:.0f} s ("
          + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in summary["stage_seconds"].items()) + ")")
    sample = summary["stages"].get("sample", {}).get("outputs", {})
    if sample:
        print(f"the page: {sample['page']}\nthe sample: {sample['wavs'][0]}")
    print(f"every stage's inputs and outputs: {summary['pipeline']}\n"
          f"MLflow: mlflow ui --backend-store-uri {redact(summary['tracking_uri'])} --host 127.0.0.1   (run {summary['mlflow_run_id']})",
          flush=True)
    return summary


if __name__ == "__main__":
    argv = ["--from_stage" if a == "--from" else a for a in sys.argv[1:]]
    sys.exit(run_job(PipelineConfig, main, __doc__, succeeded=lambda s: "failed" not in s, argv=argv, prepare=prepare))
