"""VQ-VAE learning target: what the bottom level learns from real songs in ~10 minutes, measured
on a song it never saw.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_vqvae_learning.py [--minutes 10] [--lr 1e-3]
    OMP_WAIT_POLICY=PASSIVE python bench/bench_vqvae_learning.py --protocol folds --folds 5 \
        --set runtime.autocast=bf16 --set runtime.compile=true
    OMP_WAIT_POLICY=PASSIVE python bench/bench_vqvae_learning.py --protocol held-out-span

The issue's configuration: bottom level at width 32, depth 4 (hop 8, codebook 2048 x 64),
batch 2 x 65,536 mono samples, 2 threads, 10 minutes of training (the step count is set
from a measured step time; the sum of the logged step times is reported). It runs the real job
(Ray Train, one DeepSpeed worker with 2 threads, MLflow, registry).

``folds`` (the default, and what the target is about): the ten real recordings (three songs with
lyrics, seven without) in ``--folds`` folds, each holding out different recordings (every one
once, each lyric song in a different fold; ``--rotate`` pairs them differently). A fold
preprocesses its training recordings into shards of their own, trains on them, checks that no
held-out recording is in the training rows, and measures evenly spaced crops of each held-out
recording. ``leave-one-out``: each of the three lyric songs in turn is left out and the model
trains on the other two (the smaller corpus, kept as a row to compare). ``held-out-span``:
trains on the first 80 % of the three and is measured on their last 20 % (an easier test: the
same songs). Measured: spectral convergence (dB, |STFT| with n_fft 2048, hop 512, lower is
better) and the number of distinct codes in use. Targets: mean <= -18 dB (-20 dB stretch) with
>= 1,800 codes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import apply_sets, latest, realdata_work, save  # noqa: E402
from models.losses import spectral_convergence_db  # noqa: E402
from models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from pipeline.tables import format_table  # noqa: E402

EVAL_STREAM = 2 ** 31  # crops drawn from the held-out span only


def real_shards(folder: Path) -> Path:
    """The three shared songs, preprocessed once (alignment does not matter here: linear)."""
    from corpus import write_jamendo_manifest

    out = folder / "shards"
    if not (out / "summary.json").exists():
        manifest = write_jamendo_manifest(folder / "corpus")
        subprocess.run([sys.executable, str(ROOT / "jobs" / "preprocess.py"), "--input", str(manifest), "--output", str(out),
                        "--progress", "false", "--align.aligner", "linear", "--mlflow_tracking_uri", f"sqlite:///{folder / 'pre.db'}"],
                       check=True, cwd=ROOT, capture_output=True)
    return out


RUNTIME_OVERHEAD = 1.28  # a step through the job (Ray Train, DeepSpeed, metrics) over the bare model: 0.90 / 0.70 s measured


def steps_for_budget(shards: Path, seconds: float, compiled: bool = False, autocast: bool = False,
                     trials: int = 4) -> tuple[int, float]:
    """The step count that fits the budget: the median of a few timed steps of the same model, batch,
    threads, compilation and autocast, times the runtime's measured overhead; a compilation's
    one-off cost (the first step) comes off the budget."""
    from models.losses import LossScales, vqvae_loss
    from pipeline.data.audio_windows import WindowSampler

    torch.set_num_threads(2)
    cfg = VQVAEConfig(level=0, width=32, depth=4)
    model, sampler = VQVAE(cfg), WindowSampler(shards, 65536)
    forward = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    times = []
    for i in range(trials + 1):
        x = torch.from_numpy(sampler.load_batch(sampler.epoch(i, 2, stream=EVAL_STREAM + 1)))
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = forward(x)
        loss = vqvae_loss(out, x, cfg, LossScales(0.01, 1000.0))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step = float(np.median(times[1:])) * RUNTIME_OVERHEAD
    one_off = times[0] - step if compiled else 0.0
    return int((seconds - one_off) / step), step


def evaluate(state: dict, cfg: VQVAEConfig, shards: Path, holdout: float, crops: int, length: int) -> dict:
    from pipeline.data.audio_windows import WindowSampler

    model = VQVAE(cfg)
    model.load_state_dict(state)
    model.eval()
    sampler = WindowSampler(shards, length, seed=0, span=(1.0 - holdout, 1.0))
    sc, codes = [], set()
    with torch.no_grad():
        for spec in sampler.epoch(0, crops, stream=EVAL_STREAM):
            x = torch.from_numpy(sampler.load(spec))[None]
            out = model(x)
            sc.append(float(spectral_convergence_db(x[..., 0], out["recon"][..., 0])[0]))
            codes.update(out["codes"].flatten().tolist())
    return {"eval_crops": crops, "eval_crop_samples": length, "spectral_convergence_db_mean": round(float(np.mean(sc)), 2),
            "spectral_convergence_db_per_crop": [round(v, 2) for v in sc], "codes_in_use": len(codes)}


SILENT_DBFS = -60.0  # a crop this quiet has no spectrum to converge to (a song's trailing silence gave +171 dB)


def evaluate_recordings(state: dict, cfg: VQVAEConfig, shards: Path, per_song: int, length: int,
                        names: dict[str, str]) -> dict:
    """``per_song`` evenly spaced crops of every song in ``shards``, the silent ones left out and
    counted: a figure per recording, and their mean (each recording weighs the same)."""
    from pipeline.data.audio_windows import WindowSampler, WindowSpec

    model = VQVAE(cfg)
    model.load_state_dict(state)
    model.eval()
    sampler = WindowSampler(shards, length)
    per, codes, silent = {}, set(), {}
    with torch.no_grad():
        for sid, n in zip(sampler.song_ids, sampler.song_samples):
            sc = []
            for offset in np.linspace(0, max(int(n) - length, 0), per_song).astype(np.int64):
                x = torch.from_numpy(sampler.load(WindowSpec(sid, int(offset), 0.5)))[None]  # mono: both channels
                if 10 * np.log10(float(x.pow(2).mean()) + 1e-20) < SILENT_DBFS:
                    silent[names.get(sid, sid)] = silent.get(names.get(sid, sid), 0) + 1
                    continue
                out = model(x)
                sc.append(float(spectral_convergence_db(x[..., 0], out["recon"][..., 0])[0]))
                codes.update(out["codes"].flatten().tolist())
            per[names.get(sid, sid)] = round(float(np.mean(sc)), 2)
    return {"eval_crops_per_recording": per_song, "eval_crop_samples": length, "per_recording_db": per, "silent_crops": silent,
            "spectral_convergence_db_mean": round(float(np.mean(list(per.values()))), 2), "codes_in_use": len(codes)}


def train_and_measure(args, shards: Path, eval_shards: Path, holdout: float, span: tuple[float, float], work: Path,
                      run_name: str = "", names: dict[str, str] | None = None) -> dict:
    """One run of the real job on ``shards``, measured on crops of ``eval_shards`` within ``span``
    (with ``names``: evenly spaced crops of each recording, named)."""
    from pipeline.config import from_dict
    from pipeline.registry import download, load_state_dict
    from pipeline.train.vqvae_job import TrainVQVAEConfig, train_vqvae

    db = f"sqlite:///{work / 'mlflow.db'}"
    model = {"width": 32, "depth": 4}
    if args.restart_after_unused >= 0:
        model["restart_after_unused"] = args.restart_after_unused
    data = {
        "level": "bottom", "model": model, "shards": str(shards), "sample_length": 65536,
        "holdout": holdout, "mlflow_tracking_uri": db, "experiment": "bench-vqvae-learning",
        "runtime": {"workers": 1, "cpus_per_worker": 1, "threads_per_worker": 2, "batch_size": 2, "zero_stage": 0,
                    "total_steps": args.steps, "log_every": 10, "media_every": max(1, args.steps // 3)},
        "optim": {"lr": args.lr, "warmup_steps": args.warmup},
        "checkpoint": {"every": args.steps, "storage": str(work / "runs"), "run_name": run_name}}
    apply_sets(data, args.set)
    cfg = from_dict(TrainVQVAEConfig, data)
    started = time.time()
    summary = train_vqvae(cfg)
    job_wall = time.time() - started
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=db)
    # step_s is the mean over each log interval (10 steps, the last one shorter): weight it by the interval
    logged = sorted(client.get_metric_history(summary["mlflow_run_id"], "step_s"), key=lambda m: m.step)
    intervals = [b.step - a for a, b in zip([0] + [m.step for m in logged[:-1]], logged)]
    step_s = [m.value for m in logged]
    training_seconds = sum(m.value * n for m, n in zip(logged, intervals))
    wait = [m.value for m in client.get_metric_history(summary["mlflow_run_id"], "data_wait_s")]
    state = load_state_dict(download(summary["registered"], work / "registry", db).folder)
    if names is not None:
        result = evaluate_recordings(state, cfg.model_config(), eval_shards, args.crops, 65536, names)
    else:
        result = evaluate(state, cfg.model_config(), eval_shards, 1.0 - span[0], args.crops, 65536)  # crops within span..1
    result.update(steps=args.steps, lr=args.lr, restart_after_unused=cfg.model_config().restart_after_unused,
                  warmup=args.warmup, holdout=holdout, overrides=list(args.set),
                  training_seconds=round(training_seconds, 1), job_seconds=round(job_wall, 1),
                  step_seconds_median=round(float(np.median(step_s)), 3), data_wait_seconds=round(sum(wait), 2),
                  registered=summary["registered"], loss_scales=summary["loss_scales"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["folds", "leave-one-out", "held-out-span"], default="folds",
                    help="folds: the ten recordings, each fold's held-out ones out of its training (what the target is "
                         "about); leave-one-out: train on two lyric songs, measure on the third, each in turn; "
                         "held-out-span: train on the first 80 %% of the three, measure on their last 20 %%")
    ap.add_argument("--folds", type=int, default=5, help="folds: how many folds the ten recordings make; "
                                                         "leave-one-out: how many of the three folds to run")
    ap.add_argument("--rotate", type=int, default=0, help="folds: another pairing of the held-out recordings")
    ap.add_argument("--only-fold", type=int, action="append", default=[], help="folds: run only these folds (0-based)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="folds: measure again the models the last sitting of this variant registered in --work (no training)")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget: steps = budget / a measured step time")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (overrides --minutes)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--restart-after-unused", type=int, default=-1,
                    help="codebook: also restart codes unused this many batches in a row (0 = the paper's rule only; -1 = the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any field of the job's config, e.g. --set runtime.precision=bf16 --set model.commit_weight=0.05")
    ap.add_argument("--holdout", type=float, default=0.2, help="held-out-span: the last fraction of every song")
    ap.add_argument("--crops", type=int, default=16, help="evaluation crops (per fold for leave-one-out, per held-out "
                                                          "recording for folds)")
    ap.add_argument("--work", default="", help="folder for shards and runs (default: a temporary one)")
    ap.add_argument("--name", default="", help="suffix of the sitting's variant in bench/results/vqvae_learning.json")
    args = ap.parse_args()
    work = realdata_work(args.work, "vqvae-learning-")
    target = {"spectral_convergence_db": -18.0, "stretch_db": -20.0, "codes_in_use": 1800}
    if args.protocol == "folds":
        return run_folds(args, work, target)
    if args.protocol == "held-out-span":
        shards = real_shards(work)
        if not args.steps:
            args.steps, calibration = steps_for_budget(shards, args.minutes * 60)
            print(f"measured {calibration:.2f} s per step -> {args.steps} steps in {args.minutes} minutes")
        result = train_and_measure(args, shards, shards, args.holdout, (1.0 - args.holdout, 1.0), work)
        result.update(protocol="held-out-span (later spans of the training songs: an easier test than unseen songs)",
                      target=target, original_2020={"spectral_convergence_db": -14.3, "codes_in_use": 1605})
        rows = [["spectral convergence, held-out spans (dB)", result["spectral_convergence_db_mean"], -16.0, -14.3],
                ["codes in use, held-out spans", result["codes_in_use"], 1800, 1605],
                ["training seconds (sum of steps)", result["training_seconds"], 600, 600]]
        print(format_table(["measure", "ours", "target", "original 2020"], rows))
        print(f"steps {args.steps}, median step {result['step_seconds_median']} s, data wait {result['data_wait_seconds']} s, "
              f"job wall {result['job_seconds']} s")
        print(save("vqvae_learning", result, "held_out_span" + args.name))
        return
    from bench.common import song_ids, song_shards

    ids = song_ids()
    folds = []
    for unseen in ids[:args.folds]:
        train_shards = song_shards(work, f"without-{unseen}", [i for i in ids if i != unseen])
        test_shards = song_shards(work, f"only-{unseen}", [unseen])
        budget_steps(args, train_shards)
        fold_work = work / f"fold-{unseen}{args.name}"
        fold_work.mkdir(parents=True, exist_ok=True)
        result = {"unseen_song": unseen, **train_and_measure(args, train_shards, test_shards, 0.0, (0.0, 1.0), fold_work)}
        print("fold", {k: v for k, v in result.items() if k != "spectral_convergence_db_per_crop"}, flush=True)
        folds.append(result)
    mean_sc = round(float(np.mean([f["spectral_convergence_db_mean"] for f in folds])), 2)
    mean_codes = round(float(np.mean([f["codes_in_use"] for f in folds])))
    rows = [[f["unseen_song"][:40], f["spectral_convergence_db_mean"], f["codes_in_use"], f["training_seconds"], f["steps"]]
            for f in folds] + [["mean", mean_sc, mean_codes, "", ""]]
    print(format_table(["unseen song", "spectral convergence (dB)", "codes in use", "training s", "steps"], rows))
    print(f"target: mean <= -18 dB with >= 1,800 codes; met: {mean_sc <= -18.0 and mean_codes >= 1800}")
    print(save("vqvae_learning", variant="leave_one_out" + args.name, payload=
               {"protocol": "leave-one-song-out: trained on two songs, measured on crops of the third (the target's test)",
                "folds": folds, "mean_spectral_convergence_db": mean_sc, "mean_codes_in_use": mean_codes, "target": target,
                "meets_target": mean_sc <= -18.0 and mean_codes >= 1800}))


def budget_steps(args, shards: Path) -> None:
    """Sets ``args.steps`` from the budget once (the first fold's shards), unless given."""
    if args.steps:
        return
    flags = dict(item.partition("=")[::2] for item in args.set)
    args.steps, calibration = steps_for_budget(shards, args.minutes * 60, flags.get("runtime.compile") == "true",
                                               flags.get("runtime.autocast") == "bf16")
    print(f"measured {calibration:.2f} s per step -> {args.steps} steps in {args.minutes} minutes", flush=True)


def run_folds(args, work: Path, target: dict) -> None:
    from bench.folds import check_held_out, make_folds, recordings, shards_of, song_id

    recs = recordings()
    plan = make_folds(recs, args.folds, args.rotate)
    names = {song_id(r): r.id for r in recs}
    variant = f"folds{args.folds}_r{args.rotate}" + args.name
    trained = {f["fold"]: f for f in (latest("vqvae_learning", variant) or {}).get("folds", [])} if args.evaluate_only else {}
    folds = []
    for k, held in enumerate(plan):
        if args.only_fold and k not in args.only_fold:
            continue
        held_ids = [r.id for r in held]
        train_shards = shards_of(work, f"fold{k}-r{args.rotate}-train", [r for r in recs if r not in held])
        test_shards = shards_of(work, f"fold{k}-r{args.rotate}-held", held)
        checked = check_held_out(held, shards=train_shards)  # the training rows hold none of them
        fold_work = work / f"fold{k}-r{args.rotate}{args.name}"
        print(f"fold {k}: held out {', '.join(held_ids)}", flush=True)
        if args.evaluate_only:
            from pipeline.registry import download, load_state_dict

            if k not in trained:
                sys.exit(f"fold {k}: no earlier sitting of {variant} to measure again")
            db = f"sqlite:///{fold_work / 'mlflow.db'}"
            state = load_state_dict(download(trained[k]["registered"], fold_work / "registry", db).folder)
            cfg = VQVAEConfig(level=0, width=32, depth=4)
            result = {**trained[k], "leak_check": checked, "measured_again": True,
                      **evaluate_recordings(state, cfg, test_shards, args.crops, 65536, names)}
        else:
            budget_steps(args, train_shards)
            fold_work.mkdir(parents=True, exist_ok=True)
            result = {"fold": k, "held_out": held_ids, "leak_check": checked,
                      **train_and_measure(args, train_shards, test_shards, 0.0, (0.0, 1.0), fold_work, names=names)}
        print("fold", {k: v for k, v in result.items() if k != "leak_check"}, flush=True)
        folds.append(result)
    mean_sc = round(float(np.mean([f["spectral_convergence_db_mean"] for f in folds])), 2)
    mean_codes = round(float(np.mean([f["codes_in_use"] for f in folds])))
    rows = [[f["fold"], name[:34], db, f["codes_in_use"], f["training_seconds"], f["steps"]]
            for f in folds for name, db in f["per_recording_db"].items()]
    rows += [["mean", "(per fold: mean of its recordings)", mean_sc, mean_codes, "", ""]]
    print(format_table(["fold", "held-out recording", "spectral convergence (dB)", "codes in fold", "training s", "steps"], rows))
    met = mean_sc <= target["spectral_convergence_db"] and mean_codes >= target["codes_in_use"]
    print(f"target: mean <= -18 dB with >= 1,800 codes; met: {met}")
    print(save("vqvae_learning", variant=variant, payload=
               {"protocol": f"{args.folds} folds of the ten recordings, each fold's held-out recordings kept out of its "
                            "training shards (checked by content hash), measured on evenly spaced crops of each",
                "folds": folds, "mean_spectral_convergence_db": mean_sc, "mean_codes_in_use": mean_codes, "target": target,
                "meets_target": met}))


if __name__ == "__main__":
    main()
