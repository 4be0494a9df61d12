//! A request's choices as engine jobs, whatever API it came from: submitted to the engine thread,
//! then read back either whole ([`Choice::collect`]) or piece by piece ([`Choice::next_update`]),
//! chat choices through their output parser (reasoning, content, tool calls).

use crate::api::{Fault, Generation};
use crate::chat::ChatOutput;
use crate::error::ApiError;
use crate::worker::{Command, Done, Job, JobError, Piece};
use crate::ModelState;
use frugal_constraint::{Constraint, ConstraintError};
use frugal_engine::logprobs::TokenLogprobs;
use frugal_engine::Request;
use frugal_output::{OutputDelta, OutputParser, ParsedMessage};
use frugal_scheduler::Rejected;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// One tokenized prompt and, for completions with `echo`, its text.
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub echo: Option<String>,
}

/// One generated choice, as the handler sees it.
pub struct Choice {
    pub index: usize,
    /// Which of the request's prompts it continues.
    pub prompt: usize,
    rx: mpsc::UnboundedReceiver<Piece>,
    /// Chat: splits the text into reasoning, content and tool calls.
    parser: Option<OutputParser>,
    /// A tool call has started (chat).
    pub called_tools: bool,
    /// When the request was submitted, and when its first token came back.
    pub submitted: Instant,
    pub first_token: Option<Instant>,
    /// The model stays loaded while a choice of it is read (the registry unloads only models
    /// nobody else holds).
    _model: Arc<ModelState>,
}

/// A finished choice.
pub struct Answer {
    /// Everything the model wrote (without any echoed prompt).
    pub text: String,
    /// Chat: the text parsed into reasoning, content and tool calls.
    pub message: Option<ParsedMessage>,
    pub logprobs: Vec<(u32, TokenLogprobs)>,
    /// Every generated token.
    pub tokens: Vec<u32>,
    pub done: Done,
    /// When the first token came back (`None`: none did), and when the last did.
    pub first_token: Option<Instant>,
    pub finished: Instant,
}

/// What a choice's next piece amounts to.
pub enum Update {
    /// A sampled token: its text, and for chat what the parser made of it so far.
    Token {
        token: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
        deltas: Vec<OutputDelta>,
    },
    /// The end: text held back until then, the parser's last deltas, finish reason and usage.
    Done {
        text: String,
        deltas: Vec<OutputDelta>,
        done: Done,
    },
    /// The job failed inside the server; nothing follows.
    Failed(String),
}

impl Choice {
    /// Waits for the whole answer.
    pub async fn collect(mut self) -> Result<Answer, ApiError> {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        let mut tokens = Vec::new();
        let done = loop {
            match self.rx.recv().await {
                Some(Piece::Token {
                    token,
                    text: t,
                    logprobs: lp,
                }) => {
                    self.mark_token();
                    text.push_str(&t);
                    tokens.push(token);
                    logprobs.extend(lp.map(|lp| (token, lp)));
                }
                Some(Piece::Done(d)) => break d,
                Some(Piece::Failed(msg)) => return Err(ApiError::internal(msg)),
                None => return Err(ApiError::internal("The engine thread stopped.")),
            }
        };
        text.push_str(&done.text);
        let message = self.parser.take().map(|mut parser| {
            parser.push(&text);
            parser.finish();
            parser.into_message()
        });
        Ok(Answer {
            text,
            message,
            logprobs,
            tokens,
            done,
            first_token: self.first_token,
            finished: Instant::now(),
        })
    }

    /// The next piece, parsed; `None` once the engine has dropped the job unfinished.
    pub async fn next_update(&mut self) -> Option<Update> {
        let update = match self.rx.recv().await? {
            Piece::Token {
                token,
                text,
                logprobs,
            } => {
                self.mark_token();
                Update::Token {
                    deltas: self.parse(&text, false),
                    token,
                    text,
                    logprobs,
                }
            }
            Piece::Done(done) => Update::Done {
                deltas: self.parse(&done.text, true),
                text: done.text.clone(),
                done,
            },
            Piece::Failed(msg) => Update::Failed(msg),
        };
        Some(update)
    }

    /// Notes a token's arrival (the first one's time is kept).
    fn mark_token(&mut self) {
        self.first_token.get_or_insert_with(Instant::now);
    }

    /// Chat: the parser's deltas for more text (and, at the end, what it held back).
    fn parse(&mut self, text: &str, last: bool) -> Vec<OutputDelta> {
        let Some(p) = &mut self.parser else {
            return Vec::new();
        };
        let mut deltas = p.push(text);
        if last {
            deltas.extend(p.finish());
        }
        self.called_tools |= deltas
            .iter()
            .any(|d| matches!(d, OutputDelta::ToolCallStart { .. }));
        deltas
    }
}

/// Sends `gen.n` jobs per prompt to the engine and waits until it has queued them all.
pub async fn submit(
    st: &Arc<ModelState>,
    request: &str,
    prompts: &[Prompt],
    gen: &Generation,
    logprobs: Option<usize>,
    output: Option<&ChatOutput>,
) -> Result<Vec<Choice>, ApiError> {
    if prompts.iter().any(|p| p.tokens.is_empty()) {
        return Err(ApiError::invalid_param("prompt", "The prompt is empty."));
    }
    let submit = Submit {
        request,
        gen,
        logprobs,
        output,
        model: st,
    };
    let arrived = Instant::now();
    let mut choices = Vec::new();
    let mut pending = Vec::new();
    for (pi, p) in prompts.iter().enumerate() {
        for i in 0..gen.n {
            let (job, mut choice, accepted) = submit.job(p, i, arrived, choices.len());
            choice.prompt = pi;
            st.commands
                .send(Command::Add(Box::new(job)))
                .map_err(|_| ApiError::unavailable("The server is shutting down."))?;
            pending.push(accepted);
            choices.push(choice);
        }
    }
    for acc in pending {
        match acc.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(job_error(e)),
            Err(_) => return Err(ApiError::internal("The engine thread stopped.")),
        }
    }
    Ok(choices)
}

/// What every job of one request shares.
struct Submit<'a> {
    request: &'a str,
    gen: &'a Generation,
    logprobs: Option<usize>,
    output: Option<&'a ChatOutput>,
    model: &'a Arc<ModelState>,
}

impl Submit<'_> {
    /// Choice `index` (the `i`-th of its prompt) as an engine job, its receiving side, and the
    /// engine's answer to it.
    fn job(
        &self,
        p: &Prompt,
        i: usize,
        arrived: Instant,
        index: usize,
    ) -> (Job, Choice, oneshot::Receiver<Result<(), JobError>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (acc_tx, acc_rx) = oneshot::channel();
        let mut sampling = self.gen.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
        let mut req = Request::new(p.tokens.clone(), self.gen.max_tokens, sampling);
        req.stop = self.gen.stop.clone();
        req.logprobs = self.logprobs;
        req.constraint = if let Some(fault) = self.gen.fault {
            Some(Box::new(FaultConstraint(fault)))
        } else if let Some(chat) = self.output {
            chat.constraint()
        } else {
            self.gen.text_output.as_ref().and_then(|t| t.constraint())
        };
        req.render_special = self.output.is_some_and(|o| o.render_special);
        req.speculate = self.gen.speculate;
        req.cache_prompt = self.gen.cache_prompt;
        req.cache_salt = self.gen.cache_salt.clone();
        req.ignore_eos = self.gen.ignore_eos;
        let job = Job {
            request: req,
            arrived,
            id: format!("{}/{index}", self.request),
            pieces: tx,
            accepted: acc_tx,
        };
        let choice = Choice {
            index,
            prompt: 0,
            rx,
            parser: self.output.map(ChatOutput::parser),
            called_tools: false,
            submitted: arrived,
            first_token: None,
            _model: self.model.clone(),
        };
        (job, choice, acc_rx)
    }
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Rejected(Rejected::QueueFull(n)) => ApiError::queue_full(n),
        JobError::Rejected(Rejected::TooLong {
            prompt,
            max_tokens,
            n_ctx,
        }) => crate::prep::context_exceeded(n_ctx, prompt, max_tokens, false),
        JobError::Rejected(r) => ApiError::invalid(r.to_string()),
        JobError::Invalid { param, msg } => ApiError::invalid_param(param, msg),
        JobError::ShuttingDown => ApiError::unavailable("The server is shutting down."),
    }
}

/// The `fault-injection` feature's constraint: fails its sequence from inside the engine step,
/// or makes every step of it slow.
struct FaultConstraint(Fault);

impl Constraint for FaultConstraint {
    fn mask(&mut self, _logits: &mut [f32]) -> Result<(), ConstraintError> {
        match self.0 {
            Fault::Panic => panic!("fault injected by the request"),
            Fault::Slow => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
        Ok(())
    }

    fn accept(&mut self, _token: u32) -> Result<bool, ConstraintError> {
        Ok(false)
    }
}
