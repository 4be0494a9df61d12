//! The one generation loop, tested once here for everything that uses it (`frugal run` and the
//! server): stop strings across token boundaries, max_tokens, the end of the context,
//! end-of-generation tokens, log-probabilities, and the session's KV reuse between chat turns.

use frugal_constraint::{Constraint, ConstraintError};
use frugal_engine::sampler::SamplingParams;
use frugal_engine::session::{GenerateParams, Session};
use frugal_engine::{BatchEngine, Event, FinishReason, Finished, Request};
use frugal_fixtures::dir as fixtures;
use frugal_formats::GgufFile;
use frugal_kernels::ThreadPool;
use frugal_models::{LoadOptions, Model};
use frugal_scheduler::SchedulerConfig;
use frugal_tokenizer::Tokenizer;
use std::ops::ControlFlow;

struct Fixture {
    model: Model,
    tokenizer: Tokenizer,
    pool: ThreadPool,
}

fn fixture() -> Fixture {
    let gguf = GgufFile::open(fixtures().join("models/qwen2-Q8_0.gguf")).unwrap();
    Fixture {
        model: Model::load(&gguf, &LoadOptions::default()).unwrap(),
        tokenizer: Tokenizer::from_gguf(&gguf).unwrap(),
        pool: ThreadPool::new(2),
    }
}

const N_CTX: usize = 96;

fn engine(f: &Fixture) -> BatchEngine<'_> {
    let cfg = SchedulerConfig {
        max_seqs: 4,
        token_budget: 32,
        max_waiting: 8,
        n_ctx: N_CTX,
        snapshots: Default::default(),
    };
    BatchEngine::new(&f.model, &f.tokenizer, &f.pool, cfg, 32, 8)
}

fn prompt(f: &Fixture) -> Vec<u32> {
    f.tokenizer
        .encode("The quick brown fox jumps over the lazy dog.", true, true)
        .unwrap()
}

/// Runs one request to its end; returns its events.
fn generate(f: &Fixture, req: Request) -> Vec<Event> {
    let mut eng = engine(f);
    eng.add(7, req).unwrap();
    let mut events = Vec::new();
    while !eng.is_idle() {
        let out = eng.step().unwrap();
        assert!(out.failed.is_empty());
        events.extend(out.events);
    }
    assert_eq!(eng.scheduler().blocks().n_used(), 0, "blocks leaked");
    events
}

fn greedy(f: &Fixture, max_tokens: Option<usize>) -> Request {
    let mut r = Request::new(prompt(f), max_tokens, SamplingParams::greedy());
    r.ignore_eos = true;
    r
}

fn text_of(events: &[Event]) -> String {
    let mut s: String = events.iter().map(|e| e.text.as_str()).collect();
    s.push_str(&finished(events).text);
    s
}

fn finished(events: &[Event]) -> &Finished {
    let last = events.last().expect("at least one event");
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| e.finish.is_none()));
    last.finish
        .as_ref()
        .expect("the last event ends the sequence")
}

#[test]
fn max_tokens_ends_with_length_and_the_text_is_the_decoded_tokens() {
    let f = fixture();
    let events = generate(&f, greedy(&f, Some(12)));
    assert_eq!(events.len(), 12);
    let end = finished(&events);
    assert_eq!(end.reason, FinishReason::Length);
    assert_eq!(end.usage.completion_tokens, 12);
    assert_eq!(end.usage.prompt_tokens, prompt(&f).len());
    let tokens: Vec<u32> = events.iter().map(|e| e.token).collect();
    assert_eq!(text_of(&events), f.tokenizer.decode(&tokens, true));
}

#[test]
fn without_max_tokens_generation_runs_to_the_end_of_the_context() {
    let f = fixture();
    let events = generate(&f, greedy(&f, None));
    assert_eq!(events.len(), N_CTX - prompt(&f).len());
    assert_eq!(finished(&events).reason, FinishReason::Length);
}

#[test]
fn a_stop_string_across_a_token_boundary_cuts_the_text_before_it() {
    let f = fixture();
    // Seeded sampling: the fixture's random weights repeat one token under greedy decoding.
    let sampled = || {
        let sampling = SamplingParams {
            temperature: 1.0,
            seed: Some(11),
            ..SamplingParams::default()
        };
        let mut r = Request::new(prompt(&f), Some(24), sampling);
        r.ignore_eos = true;
        r
    };
    let events = generate(&f, sampled());
    // A stop string made of the end of one token's text and the start of the next one's.
    let k = (2..events.len() - 1)
        .find(|&k| !events[k].text.is_empty() && !events[k + 1].text.is_empty())
        .expect("two consecutive tokens with text");
    let head: String = events[k].text.chars().last().into_iter().collect();
    let tail: String = events[k + 1].text.chars().take(1).collect();
    let stop = format!("{head}{tail}");
    let full = text_of(&events);
    let cut = full.find(&stop).expect("the stop string is in the text");

    let mut req = sampled();
    req.stop = vec!["never appears".into(), stop.clone()];
    let stopped = generate(&f, req);
    assert_eq!(finished(&stopped).reason, FinishReason::Stop);
    assert_eq!(text_of(&stopped), full[..cut], "stop string {stop:?}");
    assert!(stopped.len() <= k + 2);
    // Nothing of a stop string's start was shown before it completed.
    let mut shown = String::new();
    for e in &stopped {
        shown.push_str(&e.text);
        assert!(full[..cut].starts_with(&shown));
    }
}

/// Allows only `eog` once `after` tokens have been sampled.
struct EndAfter {
    after: usize,
    eog: u32,
    seen: usize,
}

impl Constraint for EndAfter {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        if self.seen == self.after {
            for (i, l) in logits.iter_mut().enumerate() {
                if i != self.eog as usize {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, _token: u32) -> Result<bool, ConstraintError> {
        self.seen += 1;
        Ok(false)
    }
}

#[test]
fn an_end_of_generation_token_stops_and_adds_no_text() {
    let f = fixture();
    let eog = f.tokenizer.eog_ids()[0];
    let reference = generate(&f, greedy(&f, Some(5)));
    let mut req = Request::new(prompt(&f), Some(20), SamplingParams::greedy());
    req.constraint = Some(Box::new(EndAfter {
        after: 5,
        eog,
        seen: 0,
    }));
    let events = generate(&f, req);
    assert_eq!(events.len(), 6);
    assert_eq!(events[5].token, eog);
    assert_eq!(events[5].text, "");
    let end = finished(&events);
    assert_eq!(end.reason, FinishReason::Stop);
    assert_eq!(end.usage.completion_tokens, 6);
    assert_eq!(text_of(&events), text_of(&reference));
}

#[test]
fn logprobs_describe_the_sampled_token_and_its_rivals() {
    let f = fixture();
    let mut req = greedy(&f, Some(6));
    req.logprobs = Some(3);
    for e in generate(&f, req) {
        let lp = e.logprobs.expect("logprobs were asked for");
        assert_eq!(lp.top.len(), 3);
        // Greedy: the sampled token is the most likely one.
        assert_eq!(lp.top[0], (e.token, lp.logprob));
        assert!(lp.logprob <= 0.0);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

fn params(max_tokens: usize, seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.9,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
    }
}

#[test]
fn a_session_gives_the_batch_engine_tokens_for_the_same_seed() {
    let f = fixture();
    let mut session = Session::new(&f.model, &f.tokenizer, &f.pool, N_CTX);
    let mut text = String::new();
    let stats = session
        .generate(&prompt(&f), &params(10, 42), &mut |t: &str| {
            text.push_str(t);
            ControlFlow::Continue(())
        })
        .unwrap();
    let mut req = Request::new(prompt(&f), Some(10), params(10, 42).sampling);
    req.ignore_eos = false;
    let events = generate(&f, req);
    let tokens: Vec<u32> = events.iter().map(|e| e.token).collect();
    assert_eq!(stats.tokens, tokens);
    assert_eq!(text, text_of(&events));
}

#[test]
fn a_session_prefills_only_the_new_tokens_of_the_next_turn() {
    let f = fixture();
    let mut session = Session::new(&f.model, &f.tokenizer, &f.pool, 256);
    let mut turn = prompt(&f);
    turn.extend(prompt(&f)); // 2 × 11 tokens
    let quiet = &mut |_: &str| ControlFlow::Continue(());
    let first = session.generate(&turn, &params(20, 1), quiet).unwrap();
    assert_eq!(first.cached_tokens, 0);
    // The next turn: everything so far, then new tokens. The cache holds every computed token
    // (the last generated one was never run), in full blocks of 16.
    turn.extend(&first.tokens);
    let computed = turn.len() - 1;
    turn.extend(prompt(&f));
    let second = session.generate(&turn, &params(4, 2), quiet).unwrap();
    assert_eq!(second.cached_tokens, computed / 16 * 16);
    assert_eq!(second.prompt_tokens, turn.len());
}

#[test]
fn a_cancelled_generation_frees_the_session_for_the_next() {
    let f = fixture();
    let mut session = Session::new(&f.model, &f.tokenizer, &f.pool, N_CTX);
    let mut steps = 0;
    // Neither generation may end by itself (an end-of-generation token).
    let no_eog = |mut p: GenerateParams| {
        p.sampling.logit_bias = f.tokenizer.eog_ids().iter().map(|&t| (t, -100.0)).collect();
        p
    };
    let long = no_eog(params(30, 3));
    let stats = session
        .generate(&prompt(&f), &long, &mut |_: &str| {
            steps += 1;
            if steps == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(stats.finish_reason, FinishReason::Aborted);
    assert_eq!(stats.generated_tokens, 3);
    let next = session
        .generate(&prompt(&f), &no_eog(params(5, 3)), &mut |_: &str| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(next.generated_tokens, 5);
}
