"""LSP's quality bars on its target person's test split, next to the ``gt`` and ``static`` rows of the same windows.

    python benchmarks/lsp_quality.py --run runs/lsp/identity0 [--out benchmarks/results/lsp_quality.json]
                                     [--work-dir DIR] [key=value ...]

Every figure comes from the zoo's own paths: ``zoo test`` (the metric suite with the data domain's backbones) for
``gt``, ``static`` and the trained LSP on the person's test windows, then one pass of the assembled model over the
same windows for what the suite does not measure:

* M-LMD of LSP at most half of ``static``'s;
* Sync_conf of LSP at least 70% of ``gt``'s;
* generated head-pose standard deviation (over each window's frames, per pose dimension, averaged over windows
  and then over the 6 dimensions, as a ratio to the ground truth's) within 0.5-2x;
* the renderer driven by ground-truth landmarks and shoulders: PSNR >= 25 dB against the ground-truth frames.

It also splits the first two bars into their causes (``diagnosis``): M-LMD measured on the landmarks themselves
(against the true ones: what a perfect renderer and detector would score) for LSP's predicted landmarks, for its
mouths under the true head poses, for the ``static`` row's reference frame and, on the synthetic corpus, for the
``lsp_true_pose_offset_removed``: those mouths with each window's constant offset from the truth taken off (the
constant part of the style, which the ``static`` row's frame, taken from the same clip, carries) and
``lsp_true_pose_cut_from_whole_clip``: those mouths cut from a generation of the window's whole clip (what the
windows' cuts cost: a window alone starts its recurrent state cold and pads its last look-ahead); the
``audio_only_floor``: the same clips with the mouth their phonemes and loudness alone determine (the speaking
style's smile, lip-corner and mouth-gain offsets removed, :func:`zoo.synth.styles.without_style`), the error left
to a model that reads the phonemes perfectly but cannot hear the style; the evaluator's own mouth error (its
landmarks of the ground-truth frames against the true ones); M-LMD / Sync_conf of the renderer driven by the
ground-truth landmarks; and how the evaluator reads that renderer's lips (``renderer_lips_read``, against its
reading of the ground-truth frames): their mean offset per lip point (a blurred lip is read smaller) and the share
of the lips' motion it reads back. ``rendered_m_lmd`` closes the loop: the suite's M-LMD of LSP's renderer driven by
the ground-truth landmarks, by LSP's mouths under the true poses and by the audio-only floor's landmarks, each
with its ratio to ``static``'s, i.e. the M-LMD bar a perfect head-pose model, and then a perfect phoneme reader,
would reach with this renderer. ``static_other_clip`` is the ``static`` row with its frame taken from another of the
person's test clips (the next one, its middle frame as ``static`` takes it): a still of the person that does not
know the scored clip's style, as LSP does not; its M-LMD through the suite and on the landmarks, and LSP's ratio
to it.

``key=value`` overrides go to every run (e.g. ``data=folder data.root=...``). Writes the JSON atomically.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp.model import LSP  # noqa: E402
from lsp.person import person_clip_ids  # noqa: E402
from zoo.data.dataset import eval_ref_indices  # noqa: E402
from zoo.harness import build_datamodule, build_metric_suite, build_model, execute, prepare  # noqa: E402
from zoo.io.atomic import write_json  # noqa: E402
from zoo.metrics.functional import centred_points, lmd, psnr  # noqa: E402
from zoo.model import frames_to_float, to_uint8_hwc  # noqa: E402
from zoo.predict import resolve_checkpoint  # noqa: E402
from zoo.synth.config import coerce, config_hash  # noqa: E402
from zoo.synth.corpus import DATASET_NAME, generate_clip  # noqa: E402
from zoo.synth.styles import get_style, without_style  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lsp_quality.json"
SUITE_METRICS = ["lmd", "sync"]          # the suite metrics the bars need (the leaderboard runs all of them)


def score(model: str, identity: int, work_dir: Path, overrides: Sequence[str], ckpt: str | None = None) -> dict:
    """``zoo test --model MODEL`` on the person's test windows; returns its ``results/test.json``."""
    if model != "lsp":      # the baselines have no LSP settings
        overrides = [o for o in overrides if not o.startswith("model.")]
    settings = [*overrides, f"run.runs_dir={work_dir}", f"run.name=quality-identity{identity}", "logger=none",
                f"eval.metrics=[{','.join(SUITE_METRICS)}]", f"data.identities=[{identity}]", "run.save_videos=0"]
    if model == "lsp":
        settings.append(f"model.identity={identity}")
    run = prepare("test", model, overrides=settings, ckpt=ckpt)
    execute(run)
    return json.loads((run.run_dir / "results" / "test.json").read_text())


def true_pose_landmarks(model: LSP, batch: dict) -> torch.Tensor:
    """LSP's landmarks [B, T, 68, 2] with its predicted mouths under the windows' true head poses."""
    return torch.stack([landmarks_under_poses(model, mel, pose) for mel, pose in zip(batch["mel"], batch["pose"])])


def landmarks_under_poses(model: LSP, mel: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """LSP's landmarks [T, 68, 2] for log-mel rows [2T, 80], its predicted mouths under the head poses [T, 6]."""
    engine = model.engine(float(model.profile.fps), poses=pose)
    return torch.cat([engine.push_mel(mel).landmarks2d, engine.finish().landmarks2d])


def whole_clip_true_pose_landmarks(model: LSP, datamodule, clip_id: str) -> torch.Tensor:
    """:func:`true_pose_landmarks` of a whole clip [T_clip, 68, 2]: the test windows cut from it have heard the
    speech before and after them, where a window generated alone starts cold and pads its end."""
    clip = datamodule.dataset.clip(clip_id)
    mel = torch.from_numpy(datamodule.feature_cache("mel").window(clip_id, 0, clip.num_frames))
    pose = torch.as_tensor(clip.read_track("pose", 0, clip.num_frames), dtype=torch.float32)
    return landmarks_under_poses(model, mel, pose)


def audio_only_landmarks(dataset, clip_id: str) -> torch.Tensor | None:
    """A synthetic clip's landmarks2d [T, 68, 2] regenerated with its style taken off the face (see the module
    docstring); None for other datasets, or a corpus this generator version does not reproduce."""
    if dataset.name != DATASET_NAME:
        return None
    cfg, meta = coerce(dataset.info["config"]), dataset.clip(clip_id).meta
    if meta.get("corpus_version") != config_hash(cfg):
        return None
    clip = generate_clip(cfg, meta["identity"], meta["style"], meta["intensity"], meta["clip_seed"], render=False,
                         expression_style=without_style(get_style(meta["style"])))
    return torch.from_numpy(clip["landmarks2d"])


def other_clip_stills(dataset, clip_ids: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For each clip, the still of the next clip in ``clip_ids`` (cyclic): its middle frame, the one the ``static``
    row takes, as (uint8 [3, H, W], landmarks2d float [68, 2]). Empty when there are fewer than 2 clips."""
    if len(clip_ids) < 2:
        return {}
    stills = {}
    for clip_id, other_id in zip(clip_ids, [*clip_ids[1:], clip_ids[0]]):
        other = dataset.clip(other_id)
        (index,) = eval_ref_indices(other.num_frames, 1)
        frame = torch.from_numpy(other.read_frames(int(index), int(index) + 1)[0]).permute(2, 0, 1)
        stills[clip_id] = (frame, torch.tensor(other.track("landmarks2d")[index], dtype=torch.float32))
    return stills


def metric_key(scores: dict, metric: str) -> str:
    """The one key of ``scores`` naming ``metric`` (keys carry their backbone, e.g. ``M-LMD[synth-landmarks]``)."""
    (key,) = [k for k in scores if k == metric or k.startswith(metric + "[")]
    return key


def offset_removed_lmd(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """M-LMD float64 [B] of landmarks ``pred`` against ``truth`` (float [B, T, 68, 2]) once each window's constant
    offset is taken off: every mean-centred mouth point is shifted by its mean difference from the truth over the
    window. What is left is the error in the mouth's motion; the part removed is what a frame of the same clip
    knows, its speaking style's constant shape (the `static` row's frame comes from the clip it is scored on)."""
    pred, truth = centred_points(pred), centred_points(truth)                          # [B, T, 20, 2]
    pred = pred + (truth - pred).mean(dim=1, keepdim=True)
    return (pred - truth).norm(dim=-1).mean(dim=(1, 2))


def lips_read(rendered: torch.Tensor, truth: torch.Tensor) -> dict:
    """How rendered lips read against the ground truth, both the evaluator's landmarks of the same frames, float
    [N, 68, 2]. Each frame's lip points are mean-centred (as M-LMD); ``offset_px``: the norm of the mean offset of
    each lip point over the frames, averaged over the 20 points (a lip drawn or read too small or too large);
    ``motion_gain``: the least-squares slope of the rendered lips' motion (about their mean shape) on the true
    lips' (1: all of it read back, below 1: damped). Frames where either detection failed (non-finite points) are
    left out, as M-LMD leaves them out."""
    valid = torch.isfinite(rendered).flatten(1).all(1) & torch.isfinite(truth).flatten(1).all(1)
    rendered, truth = centred_points(rendered[valid]), centred_points(truth[valid])     # [N', 20, 2]
    offset = (rendered - truth).mean(dim=0).norm(dim=-1).mean()
    motion, true_motion = rendered - rendered.mean(dim=0), truth - truth.mean(dim=0)
    gain = (motion * true_motion).sum() / true_motion.square().sum()
    return {"offset_px": float(offset), "motion_gain": float(gain)}


@torch.no_grad()
def motion_and_rendering(ckpt: Path, identity: int, overrides: Sequence[str]) -> dict:
    """Head-pose std of generated vs ground-truth windows, landmark-level M-LMD, and the renderer on ground-truth
    landmarks (PSNR, and the suite's M-LMD and Sync_conf), of the model the ``lsp`` row scored: the checkpoint with
    the ``model.*`` overrides (e.g. ``model.mouth_amplitude=1.5``) applied, as ``zoo test`` applies them."""
    run = prepare("test", "lsp", overrides=[*overrides, f"model.identity={identity}", "logger=none",
                                            f"eval.metrics=[{','.join(SUITE_METRICS)}]",
                                            "data.fields=[mel,audio,frames,pose,landmarks2d,shoulders2d]",
                                            "data.num_refs=1"],
                  ckpt=str(ckpt))
    model = build_model(run.cfg, run.ckpt_path).eval()
    datamodule = build_datamodule(run.cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    suite = build_metric_suite(run.cfg, datamodule)
    generated_std, true_std, psnrs, windows, read_truth, read_rendered = [], [], [], [], [], []
    landmark_lmd = {"lsp": [], "lsp_true_pose": [], "lsp_true_pose_offset_removed": [],
                    "lsp_true_pose_cut_from_whole_clip": [], "static": [],
                    "static_other_clip": [], "audio_only_floor": [], "detector_on_gt_frames": []}
    other_stills = other_clip_stills(datamodule.dataset,
                                     person_clip_ids(datamodule.dataset, datamodule.cfg.test_split, identity))
    other_scores: list[dict] = []
    audio_only: dict[str, torch.Tensor | None] = {}
    whole_clips: dict[str, torch.Tensor] = {}
    rendered_scores: dict[str, list[dict]] = {"gt_landmarks": [], "lsp_true_pose": [], "audio_only_floor": []}
    for batch in datamodule.test_dataloader():
        clip = model.generate(batch)
        generated_std.append(clip.pose.std(dim=1))                     # [B, 6]: over each window's frames
        true_std.append(batch["pose"].std(dim=1))
        truth = batch["landmarks2d"].double()
        b, t = batch["frames"].shape[:2]
        landmark_lmd["lsp"].append(lmd(clip.landmarks2d.double(), truth, "mouth"))
        true_pose = true_pose_landmarks(model, batch).double()
        landmark_lmd["lsp_true_pose"].append(lmd(true_pose, truth, "mouth"))
        landmark_lmd["lsp_true_pose_offset_removed"].append(offset_removed_lmd(true_pose, truth))
        static = batch["ref_landmarks2d"][:, :1].double().expand_as(truth)     # the static row's frame
        landmark_lmd["static"].append(lmd(static, truth, "mouth"))
        if other_stills:
            stills = [other_stills[c] for c in batch["clip_id"]]
            still_marks = torch.stack([m for _, m in stills]).double()[:, None].expand_as(truth)
            landmark_lmd["static_other_clip"].append(lmd(still_marks, truth, "mouth"))
            still_frames = frames_to_float(torch.stack([f for f, _ in stills]))[:, None].expand(-1, t, -1, -1, -1)
            other_scores += suite.score(batch, still_frames)
        floors = []
        for i, (clip_id, start) in enumerate(zip(batch["clip_id"], batch["start"].tolist())):
            if clip_id not in whole_clips:
                whole_clips[clip_id] = whole_clip_true_pose_landmarks(model, datamodule, clip_id).double()
            landmark_lmd["lsp_true_pose_cut_from_whole_clip"].append(
                lmd(whole_clips[clip_id][None, start:start + t], truth[i:i + 1], "mouth"))
            if clip_id not in audio_only:
                audio_only[clip_id] = audio_only_landmarks(datamodule.dataset, clip_id)
            if audio_only[clip_id] is not None:
                floors.append(audio_only[clip_id][start:start + t].double())
                landmark_lmd["audio_only_floor"].append(lmd(floors[-1][None], truth[i:i + 1], "mouth"))
        detected = torch.as_tensor(suite.backbones.landmarker(to_uint8_hwc(batch["frames"].flatten(0, 1))))
        landmark_lmd["detector_on_gt_frames"].append(lmd(detected.double().reshape(b, t, 68, 2), truth, "mouth"))
        drivers = {"gt_landmarks": batch["landmarks2d"], "lsp_true_pose": true_pose}
        if len(floors) == b:
            drivers["audio_only_floor"] = torch.stack(floors)
        for name, landmarks in drivers.items():
            rendered = model.render_landmarks(landmarks.flatten(0, 1).to(batch["landmarks2d"]),
                                              batch["shoulders2d"].flatten(0, 1))              # [B*T, 3, H, W]
            rendered_scores[name] += suite.score(batch, rendered.reshape(b, t, *rendered.shape[1:]))
            if name == "gt_landmarks":
                psnrs.append(psnr(rendered, frames_to_float(batch["frames"]).flatten(0, 1)))
                read_rendered.append(torch.as_tensor(suite.backbones.landmarker(to_uint8_hwc(rendered))))
        read_truth.append(detected)
        windows += [(c, int(s)) for c, s in zip(batch["clip_id"], batch["start"])]
    generated, truth = torch.cat(generated_std).mean(0), torch.cat(true_std).mean(0)    # [6]
    ratio = generated / truth
    landmark_means = {name: float(torch.cat(v).mean()) if v else None for name, v in landmark_lmd.items()}
    suite_means = {name: {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]} if scores else None
                   for name, scores in rendered_scores.items()}
    other_m_lmd = (sum(s[metric_key(s, "M-LMD")] for s in other_scores) / len(other_scores)) if other_scores else None
    return {"windows": windows, "window_seconds": run.cfg.data.window_seconds,
            "pose_std": {"generated": generated.tolist(), "ground_truth": truth.tolist(), "ratio": ratio.tolist(),
                         "mean_ratio": float(ratio.mean()), "dimensions": ["rx", "ry", "rz", "tx", "ty", "tz"]},
            "renderer_psnr_gt_landmarks": float(torch.cat(psnrs).clamp(max=100).mean()),
            "landmark_m_lmd": {**landmark_means, "ratio": landmark_means["lsp"] / landmark_means["static"],
                               "unit": "pixels of the frame, each frame's mouth points mean-centred, against the "
                                       "true landmarks"},
            "renderer_gt_landmarks": suite_means["gt_landmarks"],
            "renderer_lips_read": lips_read(torch.cat(read_rendered), torch.cat(read_truth)),
            "rendered_m_lmd": {name: None if means is None else means[metric_key(means, "M-LMD")]
                               for name, means in suite_means.items()},
            "static_other_clip_m_lmd": other_m_lmd}


def bar(value: float, threshold: str, passed: bool, **detail) -> dict:
    return {"value": round(value, 4), "threshold": threshold, "pass": bool(passed), **detail}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the LSP run directory (or its assembled checkpoint)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work-dir", type=Path, default=None, help="where the test runs go (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = parser.parse_args(argv)
    started = time.time()
    ckpt = resolve_checkpoint("lsp", args.run)
    identity = int(LSP.load(ckpt).cfg.identity)   # and one line if it is not an assembled LSP checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        results = {"gt": score("gt", identity, work, args.overrides),
                   "static": score("static", identity, work, args.overrides),
                   "lsp": score("lsp", identity, work, args.overrides, ckpt=str(ckpt))}
    own = motion_and_rendering(ckpt, identity, args.overrides)
    windows = {name: [(c["clip_id"], c["start"]) for c in r["clips"]] for name, r in results.items()}
    if not all(w == own["windows"] for w in windows.values()):
        raise RuntimeError("the gt, static and LSP runs did not score the same windows")
    m_lmd, sync = (metric_key(results["lsp"]["aggregate"], name) for name in ("M-LMD", "Sync_conf"))
    agg = {name: r["aggregate"] for name, r in results.items()}
    m_ratio = agg["lsp"][m_lmd] / agg["static"][m_lmd]
    s_ratio = agg["lsp"][sync] / agg["gt"][sync]
    pose_ratio = own["pose_std"]["mean_ratio"]
    rendered = own["renderer_psnr_gt_landmarks"]
    bars = {
        "m_lmd_vs_static": bar(m_ratio, "<= 0.5", m_ratio <= 0.5, lsp=agg["lsp"][m_lmd], static=agg["static"][m_lmd]),
        "sync_conf_vs_gt": bar(s_ratio, ">= 0.7", s_ratio >= 0.7, lsp=agg["lsp"][sync], gt=agg["gt"][sync]),
        "pose_std_vs_gt": bar(pose_ratio, "0.5-2", 0.5 <= pose_ratio <= 2.0),
        "renderer_psnr_gt_landmarks_db": bar(rendered, ">= 25", rendered >= 25.0),
    }
    rendered_ratios = {name: None if v is None else v / agg["static"][m_lmd]
                       for name, v in own["rendered_m_lmd"].items()}
    other = own["static_other_clip_m_lmd"]
    marks = own["landmark_m_lmd"]
    static_other_clip = None if other is None else {
        "m_lmd": other, "lsp_ratio": agg["lsp"][m_lmd] / other, "landmark_m_lmd": marks["static_other_clip"],
        "landmark_lsp_ratio": marks["lsp"] / marks["static_other_clip"],
        "what": "static with its frame from another of the person's test clips (not the scored one)"}
    result = {"benchmark": "lsp_quality", "checkpoint": str(ckpt), "overrides": list(args.overrides),
              "identity": identity,
              "dataset": results["lsp"]["dataset"], "num_windows": len(own["windows"]),
              "window_seconds": own["window_seconds"],
              "bars": bars, "all_pass": all(b["pass"] for b in bars.values()), "pose_std": own["pose_std"],
              "diagnosis": {"landmark_m_lmd": own["landmark_m_lmd"],
                            "renderer_gt_landmarks": own["renderer_gt_landmarks"],
                            "renderer_lips_read": own["renderer_lips_read"],
                            "rendered_m_lmd": {
                                **own["rendered_m_lmd"], "ratio_to_static": rendered_ratios,
                                "unit": "the suite's M-LMD of LSP's renderer driven by these landmarks"},
                            "static_other_clip": static_other_clip},
              "aggregate": agg, "metric_variants": results["lsp"]["metrics"],
              "environment": {"torch": torch.__version__, "platform": platform.platform()},
              "seconds": round(time.time() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for name, b in bars.items():
        print(f"{name:32s} {b['value']:>9.4f}  (bar {b['threshold']}): {'pass' if b['pass'] else 'FAIL'}")
    floor = "" if marks["audio_only_floor"] is None else f", audio-only floor {marks['audio_only_floor']:.3f}"
    print(f"landmark-level M-LMD: LSP {marks['lsp']:.3f} ({marks['lsp_true_pose']:.3f} under the true poses, "
          f"{marks['lsp_true_pose_offset_removed']:.3f} without each window's constant offset, "
          f"{marks['lsp_true_pose_cut_from_whole_clip']:.3f} cut from whole clips), static "
          f"{marks['static']:.3f} (ratio {marks['ratio']:.3f}){floor}; the detector on ground-truth frames "
          f"{marks['detector_on_gt_frames']:.3f}; renderer on ground-truth landmarks: " +
          ", ".join(f"{k} {v:.3f}" for k, v in own["renderer_gt_landmarks"].items()) +
          "; its lips as the evaluator reads them: offset {offset_px:.3f} px per point, motion gain {motion_gain:.3f}"
          .format(**own["renderer_lips_read"]))
    print("the renderer's M-LMD (its ratio to static's) driven by " + ", ".join(
        f"{name} {v:.3f} ({rendered_ratios[name]:.3f})" for name, v in own["rendered_m_lmd"].items() if v is not None))
    if static_other_clip is not None:
        print("static from another of the person's clips: M-LMD {m_lmd:.3f} (LSP's ratio {lsp_ratio:.3f}); on the "
              "landmarks {landmark_m_lmd:.3f} (LSP's ratio {landmark_lsp_ratio:.3f})".format(**static_other_clip))
    return result


if __name__ == "__main__":
    main()
