//! Text generation on top of a model: choosing tokens ([`sampler`]), stopping at stop strings
//! ([`stop`]), log-probabilities ([`logprobs`]), and the one generation loop ([`batch`]) that
//! runs every sequence — many at once for the server, one for `frugal run` ([`session`]) —
//! guessing and verifying several tokens per step where it can ([`spec`]).
#![forbid(unsafe_code)]

pub mod batch;
mod disk_tier;
pub mod logprobs;
pub mod sampler;
mod sequence;
pub mod session;
pub mod spec;
pub mod stop;

pub use batch::{
    Admitted, BatchEngine, EngineError, Event, Finished, Request, StepOutput, Usage, Verified,
};
pub use frugal_diskcache::DiskCache;
pub use frugal_scheduler::{FinishReason, SeqId};
pub use sequence::panic_message;
