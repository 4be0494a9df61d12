//! Speculative decoding changes how fast tokens come, never which: with each proposer, greedy
//! and seeded sampled output equal the output without speculation token for token, for a
//! sequence alone and inside batches where verification chunks run beside prefill chunks and
//! plain decode steps, with rejected guesses rolled back.

use frugal_engine::sampler::SamplingParams;
use frugal_engine::spec::draft::same_vocabulary;
use frugal_engine::spec::{SpecConfig, Speculator};
use frugal_engine::{BatchEngine, Request};
use frugal_fixtures::{dir as fixtures, ids, Set};
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Model};
use frugal_scheduler::SchedulerConfig;
use frugal_tokenizer::Tokenizer;
use std::collections::HashMap;

const N_BLOCKS: usize = 64;
const BLOCK: usize = 8;

struct Loaded {
    model: Model,
    tokenizer: Tokenizer,
}

fn load(name: &str) -> Loaded {
    load_from(&Set::shared(), name)
}

fn load_from(set: &Set, name: &str) -> Loaded {
    let gguf = GgufFile::open(set.model(name)).unwrap();
    Loaded {
        model: Model::load(&gguf, &LoadOptions::default()).unwrap(),
        tokenizer: Tokenizer::from_gguf(&gguf).unwrap(),
    }
}

fn prompt(name: &str) -> Vec<u32> {
    ids(&Set::shared().expected_json(name)["token_ids"])
}

#[derive(Clone, Copy)]
enum Spec<'d> {
    None,
    Ngram,
    Draft(&'d Loaded),
    Mtp,
}

/// What a run produced: each request's tokens, and the guesses proposed and accepted.
struct Outcome {
    tokens: HashMap<u64, Vec<u32>>,
    proposed: u64,
    accepted: u64,
}

/// Runs requests (id, prompt, max_tokens, sampling) to completion.
fn run(target: &Loaded, spec: Spec<'_>, cfg: &SpecConfig, budget: usize, reqs: &[Req]) -> Outcome {
    run_waves(target, spec, cfg, budget, &[reqs])
}

type Req = (u64, Vec<u32>, usize, SamplingParams);

/// Runs each wave of requests to completion, one wave after the other, in one engine.
fn run_waves(
    target: &Loaded,
    spec: Spec<'_>,
    cfg: &SpecConfig,
    budget: usize,
    waves: &[&[Req]],
) -> Outcome {
    let pool = ThreadPool::new(2);
    let sched = SchedulerConfig {
        max_seqs: 4,
        token_budget: budget,
        max_waiting: 16,
        n_ctx: 256,
        snapshots: Default::default(),
    };
    let (m, t) = (&target.model, &target.tokenizer);
    let mut eng = BatchEngine::new(m, t, &pool, sched, N_BLOCKS, BLOCK);
    eng = match spec {
        Spec::None => eng,
        Spec::Ngram => eng.with_speculation(Speculator::ngram(cfg.clone())),
        Spec::Draft(d) => {
            let (dm, dt) = (&d.model, &d.tokenizer);
            let s = Speculator::draft_model(cfg.clone(), m, t, dm, dt, N_BLOCKS, BLOCK).unwrap();
            eng.with_speculation(s)
        }
        Spec::Mtp => {
            eng.with_speculation(Speculator::mtp(cfg.clone(), m, N_BLOCKS, BLOCK).unwrap())
        }
    };
    let mut tokens: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut steps = 0;
    for wave in waves {
        for (id, p, n, sampling) in *wave {
            let mut req = Request::new(p.clone(), Some(*n), sampling.clone());
            req.ignore_eos = true;
            eng.add(*id, req).unwrap();
        }
        while !eng.is_idle() {
            for e in eng.step().unwrap().events {
                tokens.entry(e.id).or_default().push(e.token);
            }
            steps += 1;
            assert!(steps < 10_000, "no progress");
        }
    }
    assert_eq!(eng.scheduler().blocks().n_used(), 0, "blocks leaked");
    eng.scheduler().check_states().unwrap();
    let counts = eng.speculator().map(|s| s.counts()).unwrap_or_default();
    Outcome {
        tokens,
        proposed: counts.proposed,
        accepted: counts.accepted,
    }
}

/// Requests that share a prefix or not, with prompts that repeat themselves (so that n-gram
/// lookup has something to find) and lengths that make a small budget mix prefill chunks with
/// verification.
fn requests(p: &[u32], sampling: &SamplingParams) -> Vec<Req> {
    let twice = [p, p].concat();
    let mut other = p[..20].to_vec();
    other.extend([5, 6, 7, 5, 6, 7, 5, 6]);
    vec![
        (1, twice, 40, sampling.clone()),
        (2, other, 30, sampling.clone()),
        (
            3,
            vec![42, 43, 44, 45, 46, 42, 43, 44],
            48,
            sampling.clone(),
        ),
        (4, p[..33].to_vec(), 12, sampling.clone()),
    ]
}

/// Each request alone and all of them together, at two budgets, with and without `spec`: the
/// same tokens. (Hybrid models compute a prompt's whole windows otherwise than the rest, so a
/// budget that splits windows differs from one that does not: the same budget on both sides.)
/// Returns the guesses proposed and accepted over all runs.
fn check_exact(
    target: &Loaded,
    spec: Spec<'_>,
    cfg: &SpecConfig,
    p: &[u32],
    s: &SamplingParams,
) -> (u64, u64) {
    let reqs = requests(p, s);
    let (mut proposed, mut accepted) = (0, 0);
    for budget in [7, 64] {
        let plain = run(target, Spec::None, cfg, budget, &reqs);
        let batched = run(target, spec, cfg, budget, &reqs);
        assert_eq!(batched.tokens, plain.tokens, "batched, budget {budget}");
        (proposed, accepted) = (proposed + batched.proposed, accepted + batched.accepted);
        if budget < 64 {
            continue;
        }
        for r in &reqs {
            let alone = run(target, spec, cfg, budget, std::slice::from_ref(r));
            assert_eq!(
                alone.tokens[&r.0], plain.tokens[&r.0],
                "request {} alone",
                r.0
            );
            (proposed, accepted) = (proposed + alone.proposed, accepted + alone.accepted);
        }
    }
    (proposed, accepted)
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.9,
        top_k: 40,
        seed: Some(seed),
        ..SamplingParams::default()
    }
}

fn fixed() -> SpecConfig {
    SpecConfig {
        max: 5,
        fixed: true,
        ..SpecConfig::default()
    }
}

#[test]
fn ngram_lookup_changes_no_token() {
    for name in ["qwen2-f32", "qwen3moe-Q4_K_M", "deepseek2-Q8_0"] {
        let target = load(name);
        let p = prompt(name);
        for cfg in [fixed(), SpecConfig::default()] {
            let (proposed, accepted) =
                check_exact(&target, Spec::Ngram, &cfg, &p, &SamplingParams::greedy());
            assert!(
                proposed > 0 && accepted > 0,
                "{name}: {accepted} of {proposed} guesses accepted"
            );
            assert!(accepted < proposed, "{name}: some guesses must be rejected");
        }
        check_exact(&target, Spec::Ngram, &fixed(), &p, &seeded(7));
    }
}

#[test]
fn a_draft_model_changes_no_token() {
    let target = load("qwen2-f32");
    let p = prompt("qwen2-f32");
    // The model as its own draft: every guess stands.
    let (proposed, accepted) = check_exact(
        &target,
        Spec::Draft(&target),
        &fixed(),
        &p,
        &SamplingParams::greedy(),
    );
    assert!(proposed > 0);
    assert_eq!(accepted, proposed, "a model agrees with itself");
    // A quantized copy disagrees now and then: rejected guesses are rolled back, in the
    // target's cache and in the draft's own.
    let draft = load("qwen2-Q4_0");
    let cfg = SpecConfig {
        p_min: 0.0,
        ..fixed()
    };
    let (proposed, accepted) = check_exact(
        &target,
        Spec::Draft(&draft),
        &cfg,
        &p,
        &SamplingParams::greedy(),
    );
    assert!(
        accepted > 0 && accepted < proposed,
        "{accepted} of {proposed}"
    );
    check_exact(&target, Spec::Draft(&draft), &cfg, &p, &seeded(11));
    check_exact(
        &target,
        Spec::Draft(&draft),
        &SpecConfig::default(),
        &p,
        &seeded(12),
    );
}

/// Runs `first` to the end, then `second` (the same prompt) in the same engine: the second
/// finds the first's text in the n-gram pool.
fn one_after_another(
    target: &Loaded,
    spec: Spec<'_>,
    budget: usize,
    p: &[u32],
    first: &SamplingParams,
    second: &SamplingParams,
) -> Outcome {
    let a = [(1, p.to_vec(), 40, first.clone())];
    let b = [(2, p.to_vec(), 40, second.clone())];
    run_waves(target, spec, &fixed(), budget, &[&a, &b])
}

/// Hybrid models: a rejected guess has already entered the recurrent state, so the state from
/// before the chunk comes back from a rollback slot and the accepted tokens run again.
#[test]
fn hybrid_models_roll_their_state_back() {
    for name in ["qwen35-Q4_K_M", "qwen3next-Q4_K_M"] {
        let set = Set::hybrid();
        let target = load_from(&set, name);
        let p = ids(&set.expected_json(name)["token_ids"]);
        let greedy = SamplingParams::greedy();
        let close = SamplingParams {
            temperature: 0.4,
            top_k: 3,
            seed: Some(5),
            ..SamplingParams::default()
        };
        for budget in [7, 64] {
            let plain = one_after_another(&target, Spec::None, budget, &p, &greedy, &close);
            let spec = one_after_another(&target, Spec::Ngram, budget, &p, &greedy, &close);
            assert_eq!(spec.tokens, plain.tokens, "{name}, budget {budget}");
            assert!(
                spec.accepted > 0 && spec.accepted < spec.proposed,
                "{name}: {} of {} guesses accepted",
                spec.accepted,
                spec.proposed
            );
        }
        let (m, t) = (&target.model, &target.tokenizer);
        let draft = Speculator::draft_model(fixed(), m, t, m, t, N_BLOCKS, BLOCK);
        assert!(draft.is_err(), "{name}: a hybrid draft model is refused");
    }
}

/// The model's own MTP head (GLM-4.5's MoE, and the hybrids' gated attention beside their
/// recurrent layers): the same tokens, greedy and seeded, alone and in batches.
#[test]
fn the_mtp_head_changes_no_token() {
    for (set, name) in [
        (Set::labs(), "glm4moe-Q4_K_M"),
        (Set::hybrid(), "qwen35-Q4_K_M"),
        (Set::hybrid(), "qwen35moe-Q4_K_M"),
    ] {
        let target = load_from(&set, name);
        let p = ids(&set.expected_json(name)["token_ids"]);
        let cfg = SpecConfig {
            p_min: 0.0,
            ..fixed()
        };
        let (proposed, _) = check_exact(&target, Spec::Mtp, &cfg, &p, &SamplingParams::greedy());
        assert!(proposed > 0, "{name}: the head guessed nothing");
        check_exact(&target, Spec::Mtp, &cfg, &p, &seeded(3));
    }
    let plain = load("qwen2-f32");
    let refused = Speculator::mtp(fixed(), &plain.model, N_BLOCKS, BLOCK);
    assert!(refused.is_err(), "a model without an MTP layer is refused");
}

/// Inside the engine, the head guesses what llama.cpp's MTP draft guesses (its rounds of three,
/// crates/fixtures/data/mtp; exact path), up to the first near tie of a round: the head follows
/// every prefill chunk and every verified step, and starts each round from the right state.
#[test]
fn the_mtp_head_guesses_as_llama_cpp_does() {
    for (set, name) in [
        (Set::labs(), "glm4moe-Q4_K_M"),
        (Set::hybrid(), "qwen35-Q4_K_M"),
    ] {
        let reference = frugal_fixtures::mtp_reference(name);
        let gguf = GgufFile::open(set.model(name)).unwrap();
        let opts = LoadOptions {
            dequantize: true,
            ..LoadOptions::default()
        };
        let model = Model::load(&gguf, &opts).unwrap();
        let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
        let pool = ThreadPool::new(2);
        // A small budget: the prompt goes in several chunks, which the head follows.
        let sched = SchedulerConfig {
            max_seqs: 1,
            token_budget: 24,
            max_waiting: 1,
            n_ctx: 256,
            snapshots: Default::default(),
        };
        let cfg = SpecConfig {
            max: 3,
            p_min: 0.0,
            ..fixed()
        };
        let spec = Speculator::mtp(cfg, &model, N_BLOCKS, BLOCK).unwrap();
        let mut eng = BatchEngine::new(&model, &tokenizer, &pool, sched, N_BLOCKS, BLOCK)
            .with_speculation(spec);
        let want_tokens = ids(&reference["tokens"]);
        let mut req = Request::new(
            ids(&reference["prompt"]),
            Some(want_tokens.len()),
            SamplingParams::greedy(),
        );
        req.ignore_eos = true;
        eng.add(1, req).unwrap();
        let (mut tokens, mut rounds) = (Vec::new(), Vec::new());
        while !eng.is_idle() {
            let out = eng.step().unwrap();
            tokens.extend(out.events.iter().map(|e| e.token));
            rounds.extend(out.verified.into_iter().map(|v| v.guesses));
        }
        assert_eq!(tokens, want_tokens, "{name}: tokens");
        let want = reference["rounds"].as_array().unwrap();
        assert!(rounds.len() >= 10, "{name}: {} rounds", rounds.len());
        let mut compared = 0;
        for (i, (got, round)) in rounds.iter().zip(want).enumerate() {
            for (j, (g, cands)) in got.iter().zip(round.as_array().unwrap()).enumerate() {
                let (best, p0, p1) = (
                    cands[0][0].as_u64().unwrap() as u32,
                    cands[0][1].as_f64().unwrap(),
                    cands[1][1].as_f64().unwrap(),
                );
                if p0 - p1 <= 2e-3 {
                    break;
                }
                assert_eq!(*g, best, "{name}: round {i}, guess {j}");
                compared += 1;
            }
        }
        assert!(compared >= 20, "{name}: {compared} guesses compared");
    }
}

#[test]
fn a_draft_model_of_another_vocabulary_is_refused() {
    // The same tokenizer, and one where two tokens swapped ids.
    let path = fixtures().join("hf/qwen2/tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let target = Tokenizer::from_file(&path).unwrap();
    assert!(same_vocabulary(&target, &target).is_ok());
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    vocab.insert("§".into(), 101.into());
    vocab.insert("¨".into(), 100.into());
    let dir = std::env::temp_dir().join(format!("frugal-spec-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let swapped = dir.join("tokenizer.json");
    std::fs::write(&swapped, json.to_string()).unwrap();
    let draft = Tokenizer::from_file(&swapped).unwrap();
    let err = same_vocabulary(&target, &draft).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.contains("vocabulary") && err.contains("token 100"),
        "{err}"
    );
}
