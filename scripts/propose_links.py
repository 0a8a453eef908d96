"""Propose the catalog links (interventions/catalog_links/*.yaml) with keyword rules, for a person to read.

    python scripts/propose_links.py --out /tmp/proposed     # write proposals beside, never over, reviewed files
    python scripts/propose_links.py --diff                  # how the reviewed links differ from the rules

A proposal is a starting point: every link in interventions/catalog_links/ was read against its entry,
and many were changed from what these rules say. The rules stay so new catalog entries (a user's own
file) get a first pass, and so the review is measurable (--diff).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Scope of an entry, first match wins; "image" (any image SSL) is the default.
SCOPE_RULES = [
    ("infrastructure", r"checkpoint size|disk|i/o|dataloader|throughput|slow training|memory|gpu util|distributed|"
                       r"multi-node|nccl|logging|reproducib"),
    ("multimodal", r"modalit|text|caption|image-text|audio-visual|cross-modal|clip\b|vision-language"),
    ("sequence", r"audio|speech|waveform|spectrogram|time series|temporal|video|frame|sequence|sensor"),
    ("finetune", r"fine-tun|finetun|downstream|transfer|linear probe|probing"),
    ("prototype", r"prototype|cluster|centroid|codebook|swav|dino\b|assignment|sinkhorn"),
    ("mae", r"\bmae\b|mask(ed|ing)? (ratio|autoencod|token|patch|image model)|reconstruct|decoder"),
    ("ema", r"\bema\b|momentum (encoder|target|teacher)|target network|byol|teacher|exponential moving"),
    ("transformer", r"token|attention|transformer|\bvit\b|positional|patch embed|\bcls\b|head(s)? collapse"),
]

# Entry -> canonical symptoms, from its title and symptom lines.
SYMPTOM_RULES = [
    ("complete_collapse", r"collapse|too similar|identical (embedding|output|represent)|constant output|"
                          r"low (output )?variance|same (embedding|representation)"),
    ("dimensional_collapse", r"rank|redundan|correlat|eigen|dimension(s|al)? (collapse|used|unused)|"
                             r"covariance|few (dimension|direction)|spectrum"),
    ("views_overaligned", r"too easy|nearly identical across (augmented )?views|trivial(ly)? (match|solution)|"
                          r"shortcut|over-?align"),
    ("views_misaligned", r"misalign|views? (disagree|don.t align|do not align)|positive pairs? (far|dissimilar)|"
                         r"low (positive|view) similarity"),
    ("divergence", r"\bnan\b|\binf\b|explod|diverg|blow(s)? up|overflow"),
    ("loss_instability", r"spike|oscillat|unstable loss|loss (jumps|fluctuat)|instabilit"),
    ("stalled_learning", r"plateau|stall|not decreas|vanish|stuck|weights? (barely|do not|don.t) (move|change)|"
                         r"no progress|slow convergence"),
    ("dead_units", r"dead|saturat|inactive (unit|neuron|channel)|zero activation"),
    ("feature_norm", r"(feature|embedding|activation) norms?|norm (growth|imbalance|explod)|uneven norm|magnitude"),
    ("over_regularization", r"over-?regulari|weights? shrink|too much (weight decay|regulari)"),
    ("temperature", r"temperature"),
    ("mae_trivial", r"reconstruct(ion)? too easy|mask(ing)? (too|ratio)|trivial reconstruct|blurry reconstruct"),
    ("ema_mismatch", r"\bema\b|momentum (encoder|target|decay)|target (lags|network)"),
    ("batchnorm_mismatch", r"batch ?norm|batch statistic|small batch|train.?eval"),
    ("overfitting", r"overfit|memori[sz]|poor generali[sz]|validation loss rises"),
]

# Suggestion -> interventions, every matching rule contributes (a suggestion may name several fixes).
STEP_RULES = [
    (r"variance (loss|term|regulari|coefficient|penalt)", ["vicreg_variance_weight", "reg_variance"]),
    (r"covariance|decorrelat|whiten", ["vicreg_covariance_weight", "reg_covariance"]),
    (r"invariance (loss|term|weight|coefficient)", ["vicreg_invariance_weight"]),
    (r"uniformity", ["reg_uniformity"]),
    (r"entropy (maximi|regulari|loss|term|penalt)|maximi[sz]e entropy", ["reg_entropy"]),
    (r"orthogonal(ity)? (loss|regulari|constraint|penalt)|orthogonal weight", ["reg_orthogonality"]),
    (r"(feature|embedding|activation)[- ]norm (penalt|regulari|loss)|penali[sz]e (feature|embedding) norm",
     ["reg_feature_norm"]),
    (r"(l2|ℓ2)[- ]?normali[sz]|normali[sz]e (features|embeddings|outputs) before", ["vicreg_l2_normalize"]),
    (r"consistency (loss|regulari|under noise)|noise (injection|consistency)", ["reg_consistency"]),
    (r"repulsi|diversity (loss|term|regulari)", ["reg_repulsion"]),
    (r"temperature", ["simclr_temperature_lower", "simclr_temperature_higher"]),
    (r"(lower|reduce|decrease)( the)? (base )?(learning rate|lr)", ["lr_lower"]),
    (r"(increase|raise)( the)? (base )?(learning rate|lr)", ["lr_higher"]),
    (r"warm-?up|warm up", ["lr_warmup"]),
    (r"cosine (decay|schedule|annealing)|learning rate schedul|lr schedul", ["lr_schedule"]),
    (r"gradient clipping|clip (the )?gradient", ["grad_clip"]),
    (r"(increase|add|apply|stronger) weight decay", ["weight_decay_higher"]),
    (r"(reduce|lower|decrease) weight decay", ["weight_decay_lower"]),
    (r"\badamw?\b", ["optimizer_adamw"]),
    (r"\bsgd\b", ["optimizer_sgd"]),
    (r"(increase|larger) batch|batch size", ["batch_size_larger"]),
    (r"gradient accumulation|accumulate gradients", ["grad_accumulation"]),
    (r"mixed precision|\bamp\b|fp16|gradscaler", ["mixed_precision"]),
    (r"(wider|widen|increase).{0,20}projector|projector (width|dimension)", ["projector_wider"]),
    (r"(deeper|depth).{0,20}projector|projector.{0,20}(layer|depth)|mlp head", ["projector_deeper"]),
    (r"(batchnorm|batch norm|layernorm|layer norm).{0,30}(projector|head)", ["projector_norm"]),
    (r"embedding dim|output dim|latent dim|(increase|reduce) (the )?dimension", ["embedding_dim"]),
    (r"predictor", ["predictor_on", "predictor_lr"]),
    (r"stop[- ]grad", ["stop_gradient"]),
    (r"(ema|momentum).{0,30}(decay|tau|rate|coefficient)|momentum schedule", ["ema_tau", "ema_schedule"]),
    (r"re-?initiali[sz]e (the )?(ema|target|momentum)|reset.{0,20}(ema|target)|restart target",
     ["ema_target_reset"]),
    (r"groupnorm|group norm|layernorm|layer norm|batchnorm|batch norm|normali[sz]ation layer",
     ["norm_swap"]),
    (r"gelu|leaky|swish|silu|\belu\b|activation function|replace relu", ["activation_swap"]),
    (r"initiali[sz]ation|\binit\b|kaiming|xavier|orthogonal init", ["init_scheme"]),
    (r"residual|skip connection", ["residual_on"]),
    (r"dropout", ["dropout"]),
    (r"stochastic depth|drop[- ]?path", ["drop_path"]),
    (r"(larger|bigger|wider|increase) (model|encoder|backbone|capacity|width)", ["model_wider"]),
    (r"(reduce|smaller|lower) (model )?(capacity|model size)|smaller (model|encoder)", ["model_smaller"]),
    (r"deeper (model|encoder|network)|more layers", ["model_deeper"]),
    (r"mask(ing)? ratio|mask more|higher mask", ["mae_mask_ratio"]),
    (r"normali[sz]ed pixel|norm_pix|per-patch normali", ["mae_norm_pix_loss"]),
    (r"(lighter|shallower|smaller) decoder", ["mae_decoder_lighter"]),
    (r"(stronger|more aggressive|increase).{0,20}(augment|crop)|random resized crop|crop scale",
     ["crop_stronger", "color_jitter_stronger"]),
    (r"(weaker|reduce|milder|less aggressive).{0,20}augment", ["crop_weaker", "color_jitter_weaker"]),
    (r"colou?r jitter|colou?r distortion", ["color_jitter_stronger"]),
    (r"blur", ["blur"]),
    (r"solari[sz]", ["solarize"]),
]

# Why a suggestion cannot run, for those no rule above catches; first match wins.
NOT_EXECUTABLE = [
    (r"visuali[sz]|track|monitor|log |inspect|check |plot|evaluate|measure|analy[sz]e|audit|debug|probe",
     "analysis or monitoring advice, not a change to training (the health monitor covers part of it)"),
    (r"token|attention|positional|patch", "a transformer/token-level change the reference models have no knob for"),
    (r"(auxiliary|extra|additional|second) (head|task|objective|branch|decoder)|multi-task|predict ",
     "an auxiliary head or task: new model code, not a config patch"),
    (r"augment|mix(up)?|cutmix|crop|jitter|noise|mask", "a new augmentation or masking scheme autofix does not implement"),
    (r"loss|regulari|penalt|objective|contrastive|term", "a new loss term of a kind autofix does not implement"),
    (r"dataset|data |sampling|sampler|curriculum|label|class|balanc", "a change to the data or its sampling"),
    (r"modal|audio|text|video|temporal|frame", "concerns another modality than images"),
    (r"fine-?tun|freeze|downstream|linear probe|distill", "a downstream or fine-tuning procedure"),
    (r"layer|module|architecture|adapter|encoder|gate|block", "an architecture change with no knob in the reference models"),
]
OTHER = "no rule matched: read it"


def scope_of(text: str) -> str:
    for scope, pattern in SCOPE_RULES:
        if re.search(pattern, text):
            return scope
    return "image"


def symptoms_of(text: str) -> list[str]:
    return [sid for sid, pattern in SYMPTOM_RULES if re.search(pattern, text)]


def step_link(step: str) -> list[str] | str:
    s = step.lower()
    ids: list[str] = []
    for pattern, targets in STEP_RULES:
        if re.search(pattern, s):
            ids += [t for t in targets if t not in ids]
    if ids:
        return ids
    for pattern, reason in NOT_EXECUTABLE:
        if re.search(pattern, s):
            return f"no: {reason}"
    return f"no: {OTHER}"


def propose(cat) -> dict[int, dict]:
    out = {}
    for e in cat.entries.values():
        head = " ".join((e.title, *e.symptoms)).lower()
        symptoms = symptoms_of(head)
        out[e.id] = {"scope": scope_of(head), "symptoms": symptoms,
                     "steps": [step_link(s) for s in e.steps]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for proposed link files (100 entries each)")
    ap.add_argument("--diff", action="store_true", help="compare the rules with the reviewed links")
    args = ap.parse_args()
    from autofix.knowledge import catalog, links

    cat = catalog.load()
    proposed = propose(cat)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for start in range(1, max(cat.entries) + 1, 100):
            ids = [i for i in cat.ids() if start <= i < start + 100]
            (out / f"{start:03d}-{start + 99:03d}.yaml").write_text(links.dump(cat, {i: proposed[i] for i in ids}))
        print(f"wrote proposals for {len(proposed)} entries to {out}")
    if args.diff:
        reviewed = links.load()
        changed_steps = changed_symptoms = total = 0
        for i, p in proposed.items():
            r = reviewed.get(i)
            if r is None:
                continue
            total += len(p["steps"])
            changed_steps += sum(_norm(a) != _norm(b) for a, b in zip(p["steps"], r.steps))
            changed_symptoms += set(p["symptoms"]) != set(r.symptoms)
        print(f"review changed {changed_steps} of {total} suggestion links and the symptom list of "
              f"{changed_symptoms} of {len(proposed)} entries")
    return 0


def _norm(link) -> tuple:
    if isinstance(link, str):
        return ("no",) if link.startswith("no:") else (link,)
    return tuple(sorted(link))


if __name__ == "__main__":
    raise SystemExit(main())
